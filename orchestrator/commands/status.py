"""`loraforge status ID`: the scheduler's state plus the run's last progress from events.jsonl."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="id printed by `loraforge submit`")


def run(args: argparse.Namespace) -> int:
    from orchestrator.executors.base import array_tasks

    for job_id in array_tasks(args.job_id) or [args.job_id]:  # a sweep: one line per array task
        show(job_id)
    return 0


def show(job_id: str) -> None:
    from orchestrator.events import Checkpoint, Failure, Progress, read_events
    from orchestrator.executors import get
    from orchestrator.executors.base import lookup, run_folder

    entry = lookup(job_id)
    state = get(entry["executor"]).status(job_id)
    line = f"{state.job_id} {state.state}" + (f" ({state.reason})" if state.reason not in ("", "None") else "")
    if state.restarts:
        line += f" restarts {state.restarts}"
    run = run_folder(Path(entry["folder"]))
    saved = None
    if run is not None and (run / "events.jsonl").exists():
        events = read_events(run / "events.jsonl")
        progress = [e for e in events if isinstance(e, Progress)]
        saved = max((e.step for e in events if isinstance(e, Checkpoint) and e.step is not None), default=None)
        if progress:
            line += f" step {progress[-1].step}/{progress[-1].total}"
        line += f" run {run}"
    print(line)
    for other in sorted(Path(entry["folder"]).glob("node-*")):  # a multi-node job: failures on any node count
        node_run = run_folder(other)
        failures = [e for e in read_events(node_run / "events.jsonl") if isinstance(e, Failure)] if node_run else []
        if failures:
            print(f"{other.name}: {failures[-1].kind}: {failures[-1].message} (logs in {node_run})")
    if state.state in LOST:
        kept = (
            f"its run folder keeps the logs and the checkpoint at step {saved}" if saved else "no checkpoint was saved"
        )
        fix = f"`loraforge resume {run}` on a machine with the backend" if saved else "submit the job again"
        print(f"{LOST[state.state]}: {kept}; continue with {fix}, or submit with --requeue next time")


LOST = {  # Slurm's end states that are not the job's own fault, and what happened, in words
    "NODE_FAIL": "the node running the job failed",
    "BOOT_FAIL": "the node could not start the job",
    "PREEMPTED": "the job was preempted by the scheduler",
    "TIMEOUT": "the job ran out of its time limit",
    "OUT_OF_MEMORY": "the job ran out of memory on its node",
}
