"""`loraforge render JOB.yaml --backend kohya -o DIR`: write the backend's files, print its command, launch nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.jobargs import add_job_arguments, job_layers, resolve_job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)
    parser.add_argument(
        "-o",
        "--out",
        default="rendered",
        help="folder laid out like a run folder: DIR/rendered holds the backend's config (default: ./rendered)",
    )
    parser.add_argument("--explain", action="store_true", help="show each resolved value and where it came from")


def run(args: argparse.Namespace) -> int:
    from orchestrator.training import render_only

    job = resolve_job(args)
    if args.explain:
        from orchestrator.explain import explain

        layers, _ = job_layers(args)
        sys.stdout.write(explain(job, layers))
    rendered, command = render_only(job, args.backend or "kohya", Path(args.out))
    for label, path in rendered.files.items():
        print(f"{label}: {path}")
    for note in rendered.notes:
        print(f"note: {note}")
    print(command, end="")
    return 0
