"""What the run page and the compare page show beyond the live events, read from run folders with the library's own
readers: the resolved job, the rendered files, the checkpoint table and its overfitting turn (runs.checkpoint_table,
overfit.find_turn), the LoRA files, the raw log's tail, and for compare the report's arms (compare.rundata, report).

Paths in answers are relative to the run folder, so the page can link them under ``/runs/NAME/files/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from orchestrator.runs import RunDir, checkpoint_table
from orchestrator.web.store import QueueJob

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
TAIL_BYTES = 256 * 1024
MAX_TEXT = 512 * 1024


def relative(run: RunDir, path: str | Path | None) -> str | None:
    """``path`` relative to the run folder when it lies inside it (else None: it is not served)."""
    if not path:
        return None
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = run.path / candidate
    try:
        return candidate.resolve().relative_to(run.path.resolve()).as_posix()
    except (OSError, ValueError):
        return None


def run_detail(run: RunDir, job: QueueJob | None) -> dict[str, Any]:
    from orchestrator.overfit import find_turn

    checkpoints = []
    for row in checkpoint_table(run):
        rel = relative(run, row["path"])
        checkpoints.append({**row, "path": rel or row["path"], "file": bool(rel and (run.path / rel).is_file())})
    return {
        "name": run.path.name,
        "state": run.state(),
        "job_yaml": _text(run.job_file),
        "rendered": _files(run.rendered, run.path),
        "logs": _files(run.logs, run.path),
        "checkpoints": checkpoints,
        "overfit_step": find_turn(checkpoint_table(run)),
        "queue": job.to_json() if job else None,
    }


def _files(folder: Path, root: Path) -> list[dict[str, Any]]:
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            found.append({"path": path.relative_to(root).as_posix(), "size": path.stat().st_size})
    return found


def _text(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return f.read(MAX_TEXT).decode("utf-8", "replace")
    except OSError:
        return ""


def log_tail(run: RunDir, stream: str, lines: int) -> list[str]:
    """The last ``lines`` lines of a raw log as a terminal would show them: a progress bar redrawn with ``\\r``
    counts once (its last drawing), colours removed."""
    path = run.logs / f"{'stdout' if stream == 'stdout' else 'stderr'}.log"
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    shown = []
    for line in data.split("\n"):
        drawn = [part for part in ANSI.sub("", line).split("\r") if part.strip()]
        if drawn:
            shown.append(drawn[-1].rstrip())
    return shown[-max(1, min(lines, 2000)) :]


def compare_data(runs: list[RunDir]) -> dict[str, Any]:
    """What `loraforge compare` reports for these run folders (its own readers), with paths made servable."""
    from orchestrator.compare.report import LOSS_NOTE, arm_json, differing_settings
    from orchestrator.compare.rundata import load_arm

    arms = [load_arm(run.path) for run in runs]
    shown = []
    for run, arm in zip(runs, arms, strict=True):
        data = arm_json(arm)
        data["run"] = run.path.name
        data["run_dir"] = None  # the page links runs by name; the absolute path stays on the server
        data["samples"] = [
            {**sample, "path": relative(run, sample["path"])}
            for sample in data["samples"]
            if relative(run, sample["path"])
        ]
        shown.append(data)
    return {"arms": shown, "differing_settings": differing_settings(arms), "loss_note": LOSS_NOTE}
