"""`loraforge logs [-f] ID|RUN_FOLDER`: a job's unified events (the run's events.jsonl), followed while it runs.
ID is a cluster job (Slurm, Ray); a run folder is any local run (the CLI's, or a job of `loraforge serve`'s queue)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="ID|RUN_FOLDER", help="a cluster job id, or a run folder")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from orchestrator.executors.follow import follow_events, follow_run

    def out(line: str) -> None:
        print(line, flush=True)

    folder = Path(args.job_id)
    if (folder / "run.json").is_file() or (folder / "events.jsonl").is_file():
        follow_run(folder, follow=args.follow, out=out)
    else:
        follow_events(args.job_id, follow=args.follow, out=out)
    return 0
