"""`loraforge prep PHOTOS -o DATASET --subject face|object|style [--size 1024] [--crop face|center|none]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", help="folder of photos (searched recursively) or a .zip")
    parser.add_argument("-o", "--out", required=True, help="dataset folder to write")
    parser.add_argument("--subject", choices=["face", "object", "style"], default="face")
    parser.add_argument("--size", type=int, default=1024, help="long side of the prepared images (multiple of 64)")
    parser.add_argument(
        "--crop",
        choices=["auto", "face", "center", "none"],
        default="auto",
        help="auto: face-aware for faces, centre crop otherwise; none keeps the framing",
    )
    parser.add_argument("--remove-background", action="store_true", help="cut out the subject (needs loraforge[bg])")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    parser.add_argument("--json", action="store_true", help="print the manifest entries as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from orchestrator.dataset.prep import prepare_dataset
    from orchestrator.dataset.report import summary_table
    from orchestrator.display import console

    con = console()
    if args.json:
        result = prepare_dataset(
            Path(args.photos),
            Path(args.out),
            subject=args.subject,
            size=args.size,
            crop=args.crop,
            remove_background=args.remove_background,
            workers=args.workers,
        )
        print(
            json.dumps(
                {
                    "accepted": result.accepted,
                    "rejected": result.rejected,
                    "advice": result.advice,
                    "manifest": str(result.manifest_path),
                    "report": str(result.report_path),
                }
            )
        )
        return 0 if result.accepted else 1
    from rich.progress import Progress

    with Progress(console=con, transient=True) as bar:
        task = bar.add_task("preparing", total=None)
        result = prepare_dataset(
            Path(args.photos),
            Path(args.out),
            subject=args.subject,
            size=args.size,
            crop=args.crop,
            remove_background=args.remove_background,
            workers=args.workers,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    con.print(summary_table(result))
    for line in result.advice:
        con.print(f"advice: {line}")
    con.print(f"report: {result.report_path}")
    return 0 if result.accepted else 1
