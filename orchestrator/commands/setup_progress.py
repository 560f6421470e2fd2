"""pip with a progress display for `loraforge setup`: long installs show what is happening, not a frozen prompt."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from orchestrator.errors import BackendNotReady

_STEP = re.compile(r"^(Collecting|Downloading|Installing collected packages|Successfully installed|Building)")


def run_pip(argv: list[str], *, console: Any, label: str, cwd: Path | None = None) -> None:
    """Run pip, showing a spinner bar with the package being collected/downloaded; raise with the tail on error."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    tail: list[str] = []
    collected = 0
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(f"installing {label}", total=None)
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=cwd
        )
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            tail = [*tail[-30:], line]
            if _STEP.match(line):
                if line.startswith("Collecting"):
                    collected += 1
                progress.update(task, description=f"installing {label}: {collected} packages · {line[:70]}")
        returncode = process.wait()
        progress.update(task, total=1, completed=1)
    if returncode != 0:
        raise BackendNotReady(
            f"pip failed installing {label} (exit {returncode}):\n" + "\n".join(tail[-12:]),
            "check the network / package index, then run `loraforge setup` again",
        )
