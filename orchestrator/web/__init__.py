"""`loraforge serve`: a local web app over the same run folders the CLI writes.

The pieces, each a small module:

    app.py       the app's settings and parts, started and stopped together; serve() for the CLI
    server.py    the HTTP server (standard library, one thread per connection) and the request gate
    responses.py what a route gets (Request) and gives (Response, FileResponse, StreamResponse, HttpError)
    auth.py      token, host and cross-site-request checks: what every request passes before a route sees it
    routes.py    the route table: URL -> handler, path parameters checked by paths.py
    paths.py     path parameters resolved inside their folder, never outside
    store.py     the queue's own store (SQLite in WAL mode), written by the server only
    runner.py    the queue: local jobs one per GPU (one at a time on CPU), or handed to Slurm / Ray
    runindex.py  the runs list, kept from run folders (run.json, events.jsonl), read incrementally
    live.py      live updates: events.jsonl tailed once per run, fanned out as server-sent events
    uploads.py   photo and zip uploads with caps (size, count, image types, prep's zip rules)
    drafts.py    a new LoRA from photos: prep, captions, the step plan, start (the CLI's own calls)
    rundetail.py what a run page shows (job, rendered files, checkpoints, log tail) and the compare view
    pages.py     the HTML pages (small shells; static/ holds the hand-written JS and CSS)

Nothing here is imported until `loraforge serve` runs.
"""
