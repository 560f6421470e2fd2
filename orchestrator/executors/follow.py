"""A job's unified events (its run's events.jsonl) as they appear: what `logs [-f]` and `submit --wait` print. A
cluster job is followed until its scheduler says it ended (which also carries out Ray's --retries: the executor's
status call resubmits a failed attempt); a local run folder (the CLI's, or a job of `loraforge serve`'s queue) until
its run.json leaves "running"."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "UNKNOWN"}
FINAL |= {"SUCCEEDED", "STOPPED"}  # Ray's words (a FAILED Ray attempt with retries left is resubmitted first)
SUCCEEDED = {"COMPLETED", "SUCCEEDED"}


def follow_events(job_id: str, *, follow: bool, out: Callable[[str], None], poll_s: float = 1.0) -> str:
    """Print each event line of the job's run once; with ``follow``, until the job ends. Returns the job's last
    state. A line that is not a complete JSON object (a torn write) is skipped."""
    from orchestrator.executors import get
    from orchestrator.executors.base import lookup, run_folder

    entry = lookup(job_id)
    folder = Path(entry["folder"])
    executor = get(entry["executor"])
    offset = 0
    while True:
        state = executor.status(job_id).state if follow else ""
        run = run_folder(folder)
        if run is not None:
            offset = _print_new(run / "events.jsonl", offset, out)
        if not follow or state in FINAL:
            return state
        time.sleep(poll_s)


def follow_run(folder: Path, *, follow: bool, out: Callable[[str], None], poll_s: float = 0.5) -> str:
    """Print each event line of a local run folder once; with ``follow``, until run.json says the run ended (or
    its launcher is gone). Returns the run's status."""
    from orchestrator.runs import RunDir, launcher_gone

    run = RunDir(folder)
    offset = 0
    while True:
        state = run.state()
        offset = _print_new(run.events_file, offset, out)
        status = str(state.get("status", ""))
        if not follow or status not in ("created", "running") or launcher_gone(state.get("launcher")):
            offset = _print_new(run.events_file, offset, out)  # what was written before it ended
            return status
        time.sleep(poll_s)


def _print_new(path: Path, offset: int, out: Callable[[str], None]) -> int:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n") + 1  # a line still being written is read next time
    for raw in data[:end].splitlines():
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if isinstance(event, dict):
            out(json.dumps(event))
    return offset + end
