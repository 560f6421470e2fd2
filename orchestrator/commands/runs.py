"""`loraforge runs [--root runs]` lists runs; `loraforge runs show RUN` lists a run's checkpoints and losses."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    parser.add_argument("run", nargs="?", help="run folder (for show)")
    parser.add_argument("--root", default="runs", help="folder holding run folders (default: runs)")
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table
    from rich.text import Text

    from orchestrator.display import console
    from orchestrator.errors import LoraforgeError
    from orchestrator.runs import RunDir, checkpoint_table, list_runs, summarize

    con = console()
    if args.action == "show":
        if not args.run:
            raise LoraforgeError(
                "`loraforge runs show` needs a run folder", "e.g. loraforge runs show runs/me-20260101-120000"
            )
        run_dir = RunDir(Path(args.run))
        if not run_dir.path.is_dir():
            raise LoraforgeError(f"run folder {run_dir.path} does not exist", "list the runs with `loraforge runs`")
        if not run_dir.job_file.is_file() and not run_dir.state_file.is_file():
            raise LoraforgeError(
                f"{run_dir.path} is not a loraforge run folder (no job.yaml or run.json)",
                "pass a folder under runs/, e.g. one that `loraforge runs` lists",
            )
        summary = summarize(run_dir)
        _warn(con, summary.warnings)
        rows = checkpoint_table(run_dir)
        if args.json:
            print(json.dumps({"summary": _plain(summary.__dict__), "checkpoints": _plain(rows)}))
            return 0
        # Everything shown came from files anything may have written: printed as plain text, never as markup.
        con.print(
            Text(f"{summary.name}: {summary.backend}, {summary.status}, step {summary.step}/{summary.total}, ")
            + Text(f"loss {summary.loss}")
        )
        if summary.failure:
            con.print(Text(f"failure: {summary.failure}"))
        from orchestrator.overfit import find_turn

        turn = find_turn(rows)
        table = Table("step", "train loss", "val loss", "checkpoint")
        for row in rows:
            flag = "  <- validation loss turns up here" if turn is not None and row["step"] == turn else ""
            table.add_row(
                Text(str(row["step"])),
                Text(f"{row['train_loss']:.4f}" if row["train_loss"] is not None else "-"),
                Text(f"{row['val_loss']:.4f}" if row["val_loss"] is not None else "-"),
                Text(row["path"] + flag),
            )
        con.print(table)
        return 0
    runs = [summarize(r) for r in list_runs(Path(args.root))]
    for summary in runs:
        _warn(con, summary.warnings)
    if args.json:
        print(json.dumps([_plain(summary.__dict__) for summary in runs]))
        return 0
    table = Table("run", "backend", "status", "step", "loss", "lora")
    for summary in runs:
        table.add_row(
            Text(summary.name),
            Text(summary.backend),
            Text(summary.status),
            Text(f"{summary.step}/{summary.total}" if summary.step is not None else "-"),
            Text(f"{summary.loss:.4f}" if summary.loss is not None else "-"),
            Text(summary.lora or (summary.failure or "")),
        )
    con.print(table)
    return 0


def _plain(value: Any) -> Any:
    """``value`` as strict JSON can carry it: paths as text, a NaN or infinite loss (a diverged run) as null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _warn(con, warnings: list[str], limit: int = 3) -> None:  # type: ignore[no-untyped-def]
    """Lines of events.jsonl that were skipped: the first few, then how many more (stderr; --json stays clean)."""
    from rich.text import Text

    for line in warnings[:limit]:
        con.print(Text("warning: ", style="yellow") + Text(line))
    if len(warnings) > limit:
        con.print(Text("warning: ", style="yellow") + Text(f"... and {len(warnings) - limit} more skipped lines"))
