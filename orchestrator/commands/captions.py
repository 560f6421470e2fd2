"""`loraforge captions DATASET`: print the captions; --edit them in $EDITOR; --export / --import JSON lines."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="folder of images with IMAGE.txt captions")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--edit", action="store_true", help="open all captions as one TSV in $EDITOR; save to apply")
    group.add_argument("--export", metavar="FILE.jsonl", help='write {"image", "caption"} per line')
    group.add_argument("--import", dest="import_file", metavar="FILE.jsonl", help="write captions from a JSONL file")
    parser.add_argument("--json", action="store_true", help="print as JSON lines on stdout")


def run(args: argparse.Namespace) -> int:
    import json

    from orchestrator.captions import review
    from orchestrator.display import console

    dataset = Path(args.dataset)
    con = console()
    if args.edit:
        changed = review.edit_captions(dataset)
        con.print(f"{len(changed)} caption(s) changed" + (": " + ", ".join(changed[:10]) if changed else ""))
        return 0
    if args.export:
        n = review.export_jsonl(dataset, Path(args.export))
        con.print(f"exported {n} caption(s) to {args.export}")
        return 0
    if args.import_file:
        changed = review.import_jsonl(dataset, Path(args.import_file))
        con.print(f"{len(changed)} caption(s) changed from {args.import_file}")
        return 0
    entries = review.list_captions(dataset)
    if args.json:
        for e in entries:
            print(json.dumps({"image": e.image, "caption": e.caption}, ensure_ascii=False))
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table("image", "caption", show_lines=False)
    for e in entries:  # Text: a caption with [brackets] is shown as written, never read as markup
        caption = Text(e.caption) if e.caption is not None else Text("(no caption)", style="dim")
        table.add_row(Text(e.image), caption)
    Console(highlight=False).print(table)  # stdout: the listing is the command's output
    missing = sum(e.caption is None for e in entries)
    con.print(f"{len(entries)} images, {missing} without a caption")
    return 0
