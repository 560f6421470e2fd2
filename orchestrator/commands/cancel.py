"""`loraforge cancel ID`: scancel or `ray job stop`; the run folder keeps its logs and checkpoints."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id")


def run(args: argparse.Namespace) -> int:
    from orchestrator.executors import for_job

    for_job(args.job_id).cancel(args.job_id)
    print(f"cancelled {args.job_id}")
    return 0
