"""`loraforge demo [--backend simpletuner|kohya]`: the whole pipeline on a tiny built-in example, from nothing."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", "-b", choices=["simpletuner", "kohya"], default="simpletuner")
    parser.add_argument("--output-dir", default="runs", help="folder for the run folder (default: ./runs)")
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default: 10; 4 with kohya, whose SD 1.5 UNet is full size)"
    )
    parser.add_argument("--json", action="store_true", help="training events as JSON lines on stdout")
    parser.add_argument("--quiet", "-q", action="store_true")


def run(args: argparse.Namespace) -> int:
    from orchestrator.demo import run_demo
    from orchestrator.display import console, make_display

    con = console()
    started = time.monotonic()
    result = run_demo(
        args.backend,
        Path(args.output_dir),
        steps=args.steps,
        console=con,
        display=lambda: make_display(json_mode=args.json, quiet=args.quiet, title="demo"),
    )
    outcome = result.outcome
    if not outcome.ok:
        return 1
    con.print(f"[green]demo finished[/] in {time.monotonic() - started:.0f} s")
    con.print(f"  LoRA:   {outcome.lora}\n  sample: {result.sample} ({result.note})\n  run:    {outcome.run.path}")
    return 0
