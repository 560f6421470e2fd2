"""`loraforge train JOB.yaml --backend kohya` (or `loraforge train PHOTOS --trigger ... --base-model ...`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.jobargs import add_job_arguments, flag_layer, resolve_job

if TYPE_CHECKING:
    from orchestrator.job import JobSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)
    parser.add_argument("--json", action="store_true", help="write events as JSON lines to stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only failures and the LoRA path")
    parser.add_argument(
        "--captioner", default="florence2", help="one-shot mode: captioner for raw photos (default: florence2)"
    )
    parser.add_argument("--crop", choices=["face", "center", "none"], default="auto", help="one-shot mode: crop mode")


def run(args: argparse.Namespace) -> int:
    from orchestrator.warm import warm_for

    backend = args.backend or "kohya"
    # the trainer's interpreter imports its libraries while loraforge reads the job (prepares the photos) and renders
    warm = warm_for(backend)
    try:
        job = _job(args)
    except BaseException:
        if warm is not None:
            warm.discard()
        raise
    from orchestrator.display import train_with_display

    return train_with_display(job, backend, json_mode=args.json, quiet=args.quiet, warm=warm)


def _job(args: argparse.Namespace) -> JobSpec:
    """The job file's job, or a one-shot job made from a folder (or zip) of photos: prepared and captioned."""
    source = Path(args.job) if args.job else None
    if source is None or not (source.is_dir() or source.suffix.lower() == ".zip"):
        return resolve_job(args)
    from orchestrator.display import console
    from orchestrator.oneshot import OneShot, prepare_oneshot

    spec = OneShot(
        photos=source,
        base_model=args.base_model,
        trigger=args.trigger,
        subject=args.subject or "face",
        family=args.family,
        preset=args.preset,
        captioner=args.captioner,
        crop=args.crop,
        name=args.name,
        runs_root=Path(args.output_dir or "runs"),
        flags=flag_layer(args),
    )
    return prepare_oneshot(spec, console())
