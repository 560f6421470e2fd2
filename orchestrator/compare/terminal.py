"""The comparison in the terminal: the equivalence mapping before training, a summary table after."""

from __future__ import annotations

from typing import Any

from orchestrator.compare.equivalence import Equivalence
from orchestrator.compare.fmt import format_bytes, format_loss, format_seconds
from orchestrator.compare.report import Report

STATUS_STYLE = {"finished": "green", "failed": "red", "skipped": "yellow", "interrupted": "blue"}


def print_equivalence(eq: Equivalence, console: Any) -> None:
    from rich.table import Table

    backends = [b for b in eq.backends if b not in eq.unavailable]
    table = Table(title="Job settings as each backend renders them", title_justify="left")
    table.add_column("setting")
    table.add_column("value")
    for backend in backends:
        table.add_column(backend)
    for mapping in eq.mappings:
        cells = []
        for backend in backends:
            options = mapping.options.get(backend)
            if options is None:
                cells.append("?")
            else:
                cells.append("\n".join(f"{k} = {v}" for k, v in options.items()) or "—")
        table.add_row(mapping.field, "unset" if mapping.value is None else str(mapping.value), *cells)
    _print_wide(console, table)
    if eq.not_equivalent:
        console.print("[bold]Not equivalent:[/]")
        for line in eq.not_equivalent:
            console.print(f"  - {line}", markup=False)


def print_summary(report: Report, console: Any) -> None:
    from rich.table import Table

    table = Table(title="Comparison", title_justify="left")
    for column in ("arm", "status", "steps", "final loss", "wall", "first step", "steps/s", "peak RAM", "peak GPU"):
        table.add_column(column, justify="left" if column in ("arm", "status") else "right")
    table.add_column("LoRA")
    for arm in report.arms:
        style = STATUS_STYLE.get(arm.status, "")
        lora = f"{format_bytes(arm.lora.size_bytes)}, {arm.lora.keys} keys, {arm.lora.dtype}" if arm.lora else "—"
        table.add_row(
            arm.label,
            f"[{style}]{arm.status}[/]" if style else arm.status,
            f"{arm.step}/{arm.total}" if arm.step is not None and arm.total else str(arm.step or "—"),
            format_loss(arm.final_loss),
            format_seconds(arm.wall_s),
            format_seconds(arm.first_step_s),
            "—" if arm.steps_per_s is None else f"{arm.steps_per_s:.2f}",
            format_bytes(arm.peak_ram_bytes),
            format_bytes(arm.peak_gpu_bytes),
            lora,
        )
    _print_wide(console, table)
    for arm in report.arms:
        if arm.reason:
            console.print(f"{arm.label}: {arm.reason}", markup=False)
    console.print(f"report: {report.html_path}")


def _print_wide(console: Any, table: Any) -> None:
    """A terminal keeps its own width; a pipe or a CI log gets room for every column instead of 80."""
    if console.is_terminal:
        console.print(table)
        return
    width = console.width
    console.width = max(width, 160)
    try:
        console.print(table)
    finally:
        console.width = width
