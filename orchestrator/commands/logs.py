"""`loraforge logs [-f] ID`: the job's unified events (the run's events.jsonl), followed while it runs."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "UNKNOWN"}
FINAL |= {"SUCCEEDED", "STOPPED"}  # Ray's words (a FAILED Ray attempt with retries left is resubmitted first)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")


def run(args: argparse.Namespace) -> int:
    from orchestrator.executors import get
    from orchestrator.executors.base import lookup, run_folder

    entry = lookup(args.job_id)
    folder = Path(entry["folder"])
    executor = get(entry["executor"])
    printed = 0
    while True:
        done = not args.follow or executor.status(args.job_id).state in FINAL
        run = run_folder(folder)
        if run is not None and (run / "events.jsonl").exists():
            lines = (run / "events.jsonl").read_text(encoding="utf-8").splitlines()
            for line in lines[printed:]:
                print(json.dumps(json.loads(line)), flush=True)
            printed = len(lines)
        if done:
            return 0
        time.sleep(1)
