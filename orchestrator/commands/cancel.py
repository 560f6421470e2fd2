"""`loraforge cancel ID`: scancel; the run folder keeps its logs and checkpoints."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id")


def run(args: argparse.Namespace) -> int:
    from orchestrator.executors.base import lookup
    from orchestrator.executors.slurm import SlurmExecutor

    lookup(args.job_id)
    SlurmExecutor().cancel(args.job_id)
    print(f"cancelled {args.job_id}")
    return 0
