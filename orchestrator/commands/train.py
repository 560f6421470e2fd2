"""`loraforge train JOB.yaml --backend kohya` (or `loraforge train PHOTOS --trigger ... --base-model ...`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.commands.common import add_job_arguments, resolve_job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)
    parser.add_argument("--json", action="store_true", help="write events as JSON lines to stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only failures and the LoRA path")
    parser.add_argument(
        "--captioner", default=None, help="one-shot mode: captioner for raw photos (default: florence2)"
    )
    parser.add_argument("--crop", choices=["face", "center", "none"], default=None, help="one-shot mode: crop mode")


def run(args: argparse.Namespace) -> int:
    if args.job and Path(args.job).is_dir() or (args.job and Path(args.job).suffix.lower() == ".zip"):
        from orchestrator.oneshot import run_oneshot

        return run_oneshot(args)
    job = resolve_job(args)
    return train_and_report(job, args.backend or "kohya", json_mode=args.json, quiet=args.quiet)


def train_and_report(job, backend: str, *, json_mode: bool = False, quiet: bool = False, **kwargs) -> int:  # type: ignore[no-untyped-def]
    from orchestrator.display import make_display
    from orchestrator.training import run_training

    display = make_display(json_mode=json_mode, quiet=quiet, title=job.name)
    try:
        outcome = run_training(job, backend, handlers=[display.handle], **kwargs)
    finally:
        display.close()
    if outcome.ok:
        return 0
    return outcome.returncode if outcome.returncode not in (0, None) else 1
