"""`loraforge resume RUN_DIR`: continue an interrupted run from its last checkpoint at the saved step."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the run folder (runs/NAME-TIMESTAMP)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", "-q", action="store_true")
    parser.add_argument(
        "--steps", type=int, default=None, metavar="N", help="train a finished run further, to N steps in all"
    )


def run(args: argparse.Namespace) -> int:
    from orchestrator.resume import resume_run

    return resume_run(Path(args.run), json_mode=args.json, quiet=args.quiet, steps=args.steps)
