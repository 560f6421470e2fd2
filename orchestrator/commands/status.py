"""`loraforge status ID`: the scheduler's state plus the run's last progress from events.jsonl."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="id printed by `loraforge submit`")


def run(args: argparse.Namespace) -> int:
    from orchestrator.events import Progress, read_events
    from orchestrator.executors.base import lookup, run_folder
    from orchestrator.executors.slurm import SlurmExecutor

    entry = lookup(args.job_id)
    state = SlurmExecutor().status(args.job_id)
    line = f"{state.job_id} {state.state}" + (f" ({state.reason})" if state.reason not in ("", "None") else "")
    run = run_folder(Path(entry["folder"]))
    if run is not None and (run / "events.jsonl").exists():
        progress = [e for e in read_events(run / "events.jsonl") if isinstance(e, Progress)]
        if progress:
            line += f" step {progress[-1].step}/{progress[-1].total}"
        line += f" run {run}"
    print(line)
    return 0
