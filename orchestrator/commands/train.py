"""`loraforge train JOB.yaml --backend kohya` (or `loraforge train PHOTOS --trigger ... --base-model ...`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.jobargs import add_job_arguments, flag_layer, resolve_job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)
    parser.add_argument("--json", action="store_true", help="write events as JSON lines to stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only failures and the LoRA path")
    parser.add_argument(
        "--captioner", default="florence2", help="one-shot mode: captioner for raw photos (default: florence2)"
    )
    parser.add_argument("--crop", choices=["face", "center", "none"], default="auto", help="one-shot mode: crop mode")


def run(args: argparse.Namespace) -> int:
    from orchestrator.display import console, train_with_display

    source = Path(args.job) if args.job else None
    if source is not None and (source.is_dir() or source.suffix.lower() == ".zip"):
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
        from orchestrator.warm import warm_for

        warm = warm_for(args.backend or "kohya")  # the trainer imports its libraries while the photos are prepared
        try:
            job = prepare_oneshot(spec, console())
        except BaseException:
            if warm is not None:
                warm.discard()
            raise
        return train_with_display(job, args.backend or "kohya", json_mode=args.json, quiet=args.quiet, warm=warm)
    job = resolve_job(args)
    return train_with_display(job, args.backend or "kohya", json_mode=args.json, quiet=args.quiet)
