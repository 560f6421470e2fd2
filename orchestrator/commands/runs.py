"""`loraforge runs [--root runs]` lists runs; `loraforge runs show RUN` lists a run's checkpoints and losses."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    parser.add_argument("run", nargs="?", help="run folder (for show)")
    parser.add_argument("--root", default="runs", help="folder holding run folders (default: runs)")
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

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
        summary = summarize(run_dir)
        rows = checkpoint_table(run_dir)
        if args.json:
            print(
                json.dumps(
                    {
                        "summary": {k: str(v) if isinstance(v, Path) else v for k, v in summary.__dict__.items()},
                        "checkpoints": rows,
                    }
                )
            )
            return 0
        con.print(
            f"{summary.name}: {summary.backend}, {summary.status}, step {summary.step}/{summary.total}, loss {summary.loss}"
        )
        if summary.failure:
            con.print(f"failure: {summary.failure}")
        from orchestrator.overfit import find_turn

        turn = find_turn(rows)
        table = Table("step", "train loss", "val loss", "checkpoint")
        for row in rows:
            flag = "  <- validation loss turns up here" if turn is not None and row["step"] == turn else ""
            table.add_row(
                str(row["step"]),
                f"{row['train_loss']:.4f}" if row["train_loss"] is not None else "-",
                f"{row['val_loss']:.4f}" if row["val_loss"] is not None else "-",
                row["path"] + flag,
            )
        con.print(table)
        return 0
    runs = [summarize(r) for r in list_runs(Path(args.root))]
    if args.json:
        print(json.dumps([{k: str(v) if isinstance(v, Path) else v for k, v in s.__dict__.items()} for s in runs]))
        return 0
    table = Table("run", "backend", "status", "step", "loss", "lora")
    for s in runs:
        table.add_row(
            s.name,
            s.backend,
            s.status,
            f"{s.step}/{s.total}" if s.step is not None else "-",
            f"{s.loss:.4f}" if s.loss is not None else "-",
            s.lora or (s.failure or ""),
        )
    con.print(table)
    return 0
