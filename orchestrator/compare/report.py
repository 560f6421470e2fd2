"""The comparison report: ``report.json`` (every figure, for scripts) and ``report.html`` (one self-contained
file: summary table, loss curves, settings that differ, a side-by-side sample grid, the equivalence list).

It works from run folders alone, so a cluster sweep can report the runs it gathered::

    build_report([Path("runs/a-..."), Path("runs/b-...")], Path("sweep-report"))
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.compare.equivalence import Equivalence
from orchestrator.compare.html import render_html
from orchestrator.compare.rundata import ArmData, ArmResult, load_arm

LOSS_NOTE = (
    "Losses are as each backend reports them, which is not computed the same way everywhere (a running average "
    "in one, the step's own loss in another): across backends compare the shapes of the curves, not their values."
)


@dataclass
class Report:
    arms: list[ArmData]
    data: dict[str, Any]  # the content of report.json
    html_path: Path
    json_path: Path


def build_report(
    arms_results: Sequence[ArmResult | Path | str],
    out_dir: Path | str,
    *,
    equivalence: Equivalence | dict[str, Any] | None = None,
    title: str | None = None,
) -> Report:
    """Read every arm (a runner result or a bare run folder), write report.json and report.html in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arms = [load_arm(item) for item in arms_results]
    equivalence_json = equivalence.to_json() if isinstance(equivalence, Equivalence) else equivalence
    plot, plot_note = _loss_plot(arms)
    data: dict[str, Any] = {
        "title": title or "loraforge comparison",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "arms": [arm_json(arm) for arm in arms],
        "differing_settings": differing_settings(arms),
        "equivalence": equivalence_json,
        "loss_note": LOSS_NOTE,
        "loss_plot": "embedded in report.html" if plot else plot_note,
    }
    json_path = out / "report.json"
    json_path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    thumbs = {id(s): _thumbnail(s.path) for arm in arms for s in arm.samples}
    html_path = out / "report.html"
    html_path.write_text(render_html(data, arms, plot, plot_note, thumbs), encoding="utf-8")
    return Report(arms, data, html_path, json_path)


def arm_json(arm: ArmData) -> dict[str, Any]:
    return {
        "label": arm.label,
        "backend": arm.backend,
        "status": arm.status,
        "reason": arm.reason,
        "run_dir": str(arm.run_dir) if arm.run_dir else None,
        "varied": arm.varied,
        "gpu": arm.gpu,
        "wall_s": arm.wall_s,
        "first_step_s": arm.first_step_s,
        "steps_per_s": arm.steps_per_s,
        "peak_ram_bytes": arm.peak_ram_bytes,
        "peak_gpu_bytes": arm.peak_gpu_bytes,
        "step": arm.step,
        "total": arm.total,
        "final_loss": arm.final_loss,
        "loss_curve": [[s, v] for s, v in arm.loss_curve],
        "lora": _lora_json(arm),
        "samples": [
            {"prompt": s.prompt, "seed": s.seed, "trigger": s.trigger, "path": str(s.path)} for s in arm.samples
        ],
        "samples_note": arm.samples_note,
    }


def _lora_json(arm: ArmData) -> dict[str, Any] | None:
    if arm.lora is None:
        return {"error": arm.lora_error} if arm.lora_error else None
    data = arm.lora.to_json()
    data["metadata_keys"] = len(data.pop("metadata"))  # the full metadata stays in the file (loraforge inspect)
    return data


def differing_settings(arms: list[ArmData]) -> dict[str, dict[str, Any]]:
    """Job settings whose values differ between the arms that ran (names and output paths left out)."""
    ran = [arm for arm in arms if arm.settings]
    if len(ran) < 2:
        return {}
    keys = sorted({k for arm in ran for k in arm.settings})
    differing = {}
    for key in keys:
        if key in ("name", "output.dir", "output.name"):
            continue
        values = {arm.label: arm.settings.get(key) for arm in ran}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            differing[key] = values
    return differing


def _loss_plot(arms: list[ArmData]) -> tuple[bytes | None, str | None]:
    if not any(arm.loss_curve for arm in arms):
        return None, "no arm reported a training loss"
    try:
        from orchestrator.compare.plots import loss_curves_png
    except ImportError:  # pragma: no cover - plots.py imports matplotlib lazily
        return None, "loss curves need matplotlib: pip install 'loraforge[report]'"
    try:
        return loss_curves_png(arms), None
    except ImportError:
        return None, "loss curves need matplotlib: pip install 'loraforge[report]'"


def _thumbnail(path: Path, size: int = 320) -> str | None:
    """A JPEG data URI of the image, at most ``size`` pixels a side (keeps the one-file report small)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=90)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
