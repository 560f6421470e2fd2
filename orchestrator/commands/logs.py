"""`loraforge logs [-f] ID`: the job's unified events (the run's events.jsonl), followed while it runs."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")


def run(args: argparse.Namespace) -> int:
    from orchestrator.executors.follow import follow_events

    follow_events(args.job_id, follow=args.follow, out=lambda line: print(line, flush=True))
    return 0
