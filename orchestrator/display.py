"""Drawing events: a rich live progress line in a terminal, nothing with --quiet, JSON lines with --json.

One console owns all human output (stderr), so stdout stays clean for ``--json``.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.text import Text

from orchestrator.events import (
    Checkpoint,
    Event,
    Failure,
    Finished,
    Log,
    Phase,
    Progress,
    Sample,
    Validation,
    event_to_json,
)


def console(stream: TextIO | None = None):  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)


class JsonDisplay:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def handle(self, event: Event) -> None:
        self.stream.write(event_to_json(event) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class QuietDisplay:
    """Only failures and the final result."""

    def __init__(self) -> None:
        self.console = console()

    def handle(self, event: Event) -> None:
        if isinstance(event, Failure):
            _print_failure(self.console, event)
        elif isinstance(event, Finished) and event.lora_path:
            self.console.print(event.lora_path, markup=False)

    def close(self) -> None:
        pass


class RichDisplay:
    """Phase, step/total, loss, it/s and ETA on one live line; checkpoints, warnings and the end as lines above."""

    def __init__(self, title: str = "training") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self.console = console()
        self.bar = Bar(
            TextColumn("[bold]{task.fields[phase]:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.bar.add_task(title, total=None, phase="setup", stats="")
        self.bar.start()

    def handle(self, event: Event) -> None:
        if isinstance(event, Phase):
            self.bar.update(self.task, phase=event.name)
        elif isinstance(event, Progress):
            stats = []
            if event.loss is not None:
                stats.append(f"loss {event.loss:.4f}")
            if event.it_per_s:
                stats.append(f"{event.it_per_s:.2f} it/s")
            if event.epoch is not None:
                stats.append(f"epoch {event.epoch}" + (f"/{event.epochs}" if event.epochs else ""))
            self.bar.update(
                self.task, completed=event.step, total=event.total, phase="training", stats="  ".join(stats)
            )
        elif isinstance(event, Checkpoint):
            self.console.print(f"checkpoint at step {event.step}: {event.path}", markup=False)
        elif isinstance(event, Validation):
            self.console.print(f"validation loss at step {event.step}: {event.loss:.4f}")
        elif isinstance(event, Sample):
            self.console.print(f"sample at step {event.step}: {event.path}", markup=False)
        elif isinstance(event, Log) and event.level in ("warning", "error"):
            self.console.print(Text(f"{event.level}: ", style="yellow") + Text(event.text))
        elif isinstance(event, Failure):
            self.bar.stop()
            _print_failure(self.console, event)
        elif isinstance(event, Finished):
            self.bar.stop()
            self.console.print(Text("done", style="green") + Text(f" in {event.seconds:.0f} s: {event.lora_path}"))

    def close(self) -> None:
        self.bar.stop()


def _print_failure(con, event: Failure) -> None:  # type: ignore[no-untyped-def]
    con.print(Text(f"failed ({event.kind}): ", style="red") + Text(event.message))
    if event.hint:
        con.print(f"  fix: {event.hint}", markup=False)
    for line in event.log_tail[-12:]:
        con.print(f"  | {line}", markup=False)
    if event.log_path:
        con.print(f"  full log: {event.log_path}", markup=False)


def make_display(json_mode: bool = False, quiet: bool = False, title: str = "training"):  # type: ignore[no-untyped-def]
    if json_mode:
        return JsonDisplay()
    if quiet or not sys.stderr.isatty():
        return QuietDisplay() if quiet else PlainDisplay()
    return RichDisplay(title)


class PlainDisplay:
    """Not a terminal (CI, a pipe): one line per phase, every tenth of the run, checkpoints and the end."""

    def __init__(self) -> None:
        self.console = console()
        self.last_decile = -1

    def handle(self, event: Event) -> None:
        if isinstance(event, Phase):
            self.console.print(f"phase: {event.name}")
        elif isinstance(event, Progress):
            if event.total:
                decile = event.step * 10 // max(event.total, 1)
                if decile != self.last_decile:
                    self.last_decile = decile
                    loss = f" loss {event.loss:.4f}" if event.loss is not None else ""
                    self.console.print(f"step {event.step}/{event.total}{loss}")
        elif isinstance(event, (Checkpoint, Sample)):
            self.console.print(f"{type(event).__name__.lower()} at step {event.step}: {event.path}", markup=False)
        elif isinstance(event, Log) and event.level in ("warning", "error"):
            self.console.print(f"{event.level}: {event.text}", markup=False)
        elif isinstance(event, Failure):
            _print_failure(self.console, event)
        elif isinstance(event, Finished):
            self.console.print(f"done in {event.seconds:.0f} s: {event.lora_path}", markup=False)

    def close(self) -> None:
        pass


def train_with_display(job, backend: str, *, json_mode: bool = False, quiet: bool = False, **kwargs) -> int:  # type: ignore[no-untyped-def]
    """Run ``job`` with the display the flags ask for; the exit status: 0 with a LoRA, 130 when stopped by the
    user, else 1 (the run failed; its Failure was shown). ``kwargs`` go to run_training (run=, resume=)."""
    from orchestrator.training import run_training

    display = make_display(json_mode=json_mode, quiet=quiet, title=job.name)
    try:
        outcome = run_training(job, backend, handlers=[display.handle], **kwargs)
    finally:
        display.close()
    if outcome.ok:
        return 0
    return 130 if outcome.failure is not None and outcome.failure.kind == "interrupted" else 1
