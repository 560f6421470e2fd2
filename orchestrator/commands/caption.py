"""`loraforge caption DATASET`: write a caption per image, with the trigger token, using one captioner."""

from __future__ import annotations

import argparse
from pathlib import Path

CAPTIONER_NAMES = ("florence2", "blip", "blip2", "wd14", "template")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="folder of images; captions are written beside them as IMAGE.txt")
    parser.add_argument("--captioner", "-c", choices=CAPTIONER_NAMES, default="florence2", help="default: florence2")
    parser.add_argument("--trigger", "-t", help='trigger token prepended once, e.g. "ohwx person" (omit for styles)')
    parser.add_argument("--model", help="hub id or local folder (default: the captioner's standard model)")
    parser.add_argument("--task", choices=("caption", "detailed", "more-detailed"), default="caption")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--overwrite", dest="mode", action="store_const", const="overwrite", help="caption every image")
    group.add_argument(
        "--keep-existing", dest="mode", action="store_const", const="keep", help="keep existing captions (default)"
    )
    parser.set_defaults(mode="keep")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"), default="auto")
    parser.add_argument("--separator", default=", ", help="between trigger and caption (default: ', ')")
    parser.add_argument("--template", default="photo of {trigger}", help="the template captioner's text")
    parser.add_argument("--threshold", type=float, default=0.35, help="wd14: minimum probability of a general tag")
    parser.add_argument(
        "--character-threshold", type=float, default=0.85, help="wd14: minimum probability of a character tag"
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a checkpoint's own Python code to run (only for models you trust; never needed by default)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import sys

    from orchestrator.captions import caption_dataset
    from orchestrator.display import console

    con = console()
    if args.captioner in ("florence2", "blip", "blip2"):
        _quiet_transformers()
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn(f"[bold]{args.captioner}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=con
        )
        task = bar.add_task("captions", total=None)
        bar.start()

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(task, completed=done, total=total)

    try:
        result = caption_dataset(
            Path(args.dataset),
            captioner=args.captioner,
            trigger=args.trigger,
            model=args.model,
            task=args.task,
            mode=args.mode,
            batch_size=args.batch_size,
            device=args.device,
            separator=args.separator,
            trust_remote_code=args.trust_remote_code,
            template=args.template,
            general_threshold=args.threshold,
            character_threshold=args.character_threshold,
            on_progress=progress,
        )
    finally:
        if bar is not None:
            bar.stop()
    for image, reason in result.skipped:
        con.print(f"[yellow]skipped[/] {image}: {reason}")
    for image, tokens in result.too_long:
        con.print(
            f"[yellow]warning:[/] {image.with_suffix('.txt')} is {tokens} tokens ({result.token_count}); the text "
            "encoder reads 75, the rest is cut off"
        )
    added = f" ({result.trigger_added} got the trigger)" if result.trigger_added else ""
    speed = ""
    if result.written:
        speed = f" ({result.images_per_second:.1f} images/s after {result.load_seconds:.1f} s loading)"
    con.print(
        f"{result.images} images: {result.written} captioned, {result.kept} kept{added}, "
        f"{len(result.skipped)} skipped{speed}"
    )
    return 0


def _quiet_transformers() -> None:
    """transformers' own per-file progress bars and advice would bury ours; errors still come through."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        return
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
