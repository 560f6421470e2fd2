"""The route table: every URL the app answers, and the small handler behind each.

Path parameters are matched on the path as sent (percent-encoded), then decoded once and checked by paths.py:
``{name}`` is one segment (a run, a job, a draft, a file name), ``{path*}`` a relative path inside a folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from orchestrator.runs import RunDir
from orchestrator.web import pages
from orchestrator.web.live import parse_positions
from orchestrator.web.paths import check_name, child, inside
from orchestrator.web.responses import (
    Answer,
    FileResponse,
    HttpError,
    Request,
    StreamResponse,
    html_response,
    json_response,
)
from orchestrator.web.rundetail import compare_data, log_tail

if TYPE_CHECKING:
    from orchestrator.web.app import App

Handler = Callable[[Request], Answer]
STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


class Routes:
    def __init__(self) -> None:
        self.table: list[tuple[str, str, re.Pattern[str], Handler]] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        pattern = re.sub(r"\{(\w+)\*\}", r"(?P<\1>.+)", template)
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self.table.append((method, template, re.compile(pattern), handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for route_method, _, pattern, handler in self.table:
            found = pattern.fullmatch(path)
            if found is None:
                continue
            if route_method == method:
                return handler, {key: unquote(value) for key, value in found.groupdict().items()}
            allowed = True
        raise HttpError(405 if allowed else 404, "method not allowed" if allowed else "not found")


def build_routes(app: App) -> Routes:
    routes = Routes()
    add = routes.add

    def run_of(name: str) -> RunDir:
        run = RunDir(child(app.runs_root, name))
        if not run.job_file.is_file():
            raise HttpError(404, "not found")
        return run

    # --- pages ------------------------------------------------------------------------------------------------
    add("GET", "/", lambda r: html_response(pages.runs_page(app, app.runs_json())))
    add("GET", "/new", lambda r: html_response(pages.new_page(app)))
    add(
        "GET",
        "/compare",
        lambda r: html_response(pages.compare_page(app, [run_of(n).path.name for n in r.query.get("run", [])])),
    )
    add("GET", "/runs/{name}", lambda r: html_response(pages.run_page(app, run_of(r.params["name"]).path.name)))
    add("GET", "/jobs/{job}", lambda r: html_response(pages.job_page(app, job_of(app, r.params["job"])["id"])))
    add("GET", "/static/{file}", lambda r: static(r.params["file"]))

    # --- files ------------------------------------------------------------------------------------------------
    def run_file(request: Request) -> Answer:
        path = inside(run_of(request.params["name"]).path, request.params["path"])
        if not path.is_file():
            raise HttpError(404, "not found")
        return FileResponse(path, download=request.arg("download") == "1")

    def draft_file(request: Request) -> Answer:
        path = app.drafts.file(request.params["draft"], request.params["path"])
        if not path.is_file():
            raise HttpError(404, "not found")
        return FileResponse(path)

    add("GET", "/runs/{name}/files/{path*}", run_file)
    add("GET", "/drafts/{draft}/files/{path*}", draft_file)

    # --- runs, live events, compare ---------------------------------------------------------------------------
    add("GET", "/api/session", lambda r: json_response(app.session_json()))
    add("GET", "/api/runs", lambda r: json_response(app.runs_json()))
    add("GET", "/api/runs/{name}", lambda r: json_response(app.run_json(run_of(r.params["name"]))))

    def log(request: Request) -> Answer:
        run = run_of(request.params["name"])
        lines = int(request.arg("lines") or 200) if (request.arg("lines") or "200").isdigit() else 200
        return json_response({"lines": log_tail(run, request.arg("stream") or "stderr", lines)})

    add("GET", "/api/runs/{name}/log", log)

    def events(request: Request) -> Answer:
        names = request.query.get("run", [])
        if not 1 <= len(names) <= 4:
            raise HttpError(400, "follow 1 to 4 runs: ?run=NAME&run=NAME")
        runs = [(name, run_of(name).path) for name in names]
        start = parse_positions(request.headers.get("Last-Event-ID"), len(runs))
        app.feeds.admit()
        return StreamResponse(lambda send, stopping: app.feeds.stream(runs, start, send, stopping))

    add("GET", "/api/events", events)

    def compare(request: Request) -> Answer:
        names = request.query.get("run", [])
        if not 2 <= len(names) <= 4:
            raise HttpError(400, "compare 2 to 4 runs: ?run=NAME&run=NAME")
        return json_response(compare_data([run_of(name) for name in names]))

    add("GET", "/api/compare", compare)

    # --- the queue --------------------------------------------------------------------------------------------
    add("GET", "/api/jobs", lambda r: json_response([job.to_json() for job in app.store.jobs()]))
    add("GET", "/api/jobs/{job}", lambda r: json_response(job_of(app, r.params["job"])))
    add(
        "POST",
        "/api/jobs/{job}/cancel",
        lambda r: json_response(app.runner.cancel(job_of(app, r.params["job"])["id"]).to_json()),
    )
    add(
        "POST",
        "/api/runs/{name}/resume",
        lambda r: json_response(app.runner.resume(run_of(r.params["name"]).path).to_json()),
    )
    add(
        "POST",
        "/api/runs/{name}/retry",
        lambda r: json_response(app.runner.retry(run_of(r.params["name"]).path).to_json()),
    )

    def cancel_run(request: Request) -> Answer:
        job = app.store.by_run(run_of(request.params["name"]).path)
        if job is None or job.status not in ("queued", "running"):
            raise HttpError(409, "this run is not running from this server's queue", "stop a CLI run with Ctrl-C")
        return json_response(app.runner.cancel(job.id).to_json())

    add("POST", "/api/runs/{name}/cancel", cancel_run)

    # --- a new LoRA -------------------------------------------------------------------------------------------
    drafts = app.drafts
    add("POST", "/api/drafts", lambda r: json_response({"id": drafts.create()}, 201))

    def upload(request: Request) -> Answer:
        from orchestrator.web.uploads import receive

        photos = drafts.photos(request.params["draft"])
        with drafts.lock(request.params["draft"]):
            kept = receive(photos, request.params["file"], request.body, request.length, app.limits)
        return json_response(kept, 201)

    add("PUT", "/api/drafts/{draft}/files/{file}", upload)

    def prep(request: Request) -> Answer:
        form = request.json()
        size = _int(form.get("size"), 1024)
        return json_response(
            drafts.prep(
                request.params["draft"],
                subject=str(form.get("subject") or "face"),
                size=size,
                crop=str(form.get("crop") or "auto"),
            )
        )

    add("POST", "/api/drafts/{draft}/prep", prep)

    def autocaption(request: Request) -> Answer:
        form = request.json()
        captions = drafts.caption(
            request.params["draft"],
            captioner=str(form.get("captioner") or "template"),
            trigger=form.get("trigger"),
            template=form.get("template"),
            overwrite=bool(form.get("overwrite")),
        )
        return json_response(captions)

    add("POST", "/api/drafts/{draft}/captions/auto", autocaption)
    add("GET", "/api/drafts/{draft}/captions", lambda r: json_response(drafts.captions(r.params["draft"])))
    add(
        "PUT",
        "/api/drafts/{draft}/captions",
        lambda r: json_response({"changed": drafts.edit(r.params["draft"], r.json())}),
    )
    add("POST", "/api/drafts/{draft}/plan", lambda r: json_response(drafts.plan(r.params["draft"], r.json())))

    def start(request: Request) -> Answer:
        form = request.json()
        plan = drafts.plan(request.params["draft"], form)
        job, _ = drafts.job(request.params["draft"], form)
        executor = str(form.get("executor") or "local")
        options = {key: form.get(key) for key in ("partition", "time", "address", "gpus", "retries") if form.get(key)}
        queued = app.runner.submit(
            plan["job"],
            plan["backend"],
            name=job.name,
            gpus_needed=job.distributed.gpus,
            executor=executor,
            options=options,
        )
        return json_response(queued.to_json(), 201)

    add("POST", "/api/drafts/{draft}/start", start)
    return routes


def job_of(app: App, job_id: str) -> dict[str, Any]:
    job = app.store.get(check_name(job_id))
    if job is None:
        raise HttpError(404, "not found")
    return job.to_json()


def static(name: str) -> Answer:
    path = inside(STATIC, name)
    if not path.is_file():
        raise HttpError(404, "not found")
    return FileResponse(path, kind=STATIC_TYPES.get(path.suffix, "application/octet-stream"))


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
