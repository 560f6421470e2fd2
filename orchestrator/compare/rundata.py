"""One arm of a comparison, read back from its run folder alone (so cluster sweeps can report their runs too).

What the report needs beyond a plain run folder is written next to it by the compare runner, and is optional:

    metrics.json           label, varied fields, wall_s, first_step_s, steps_per_s, peak_ram_bytes,
                           peak_gpu_bytes, gpu (see runner.py)
    samples/samples.json   [{"prompt", "seed", "trigger", "path"}]: images from the final LoRA
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.compare.lorafile import LoraSummary, summarize_lora
from orchestrator.errors import LoraforgeError
from orchestrator.events import Failure, Finished, Progress, read_events
from orchestrator.job import read_yaml
from orchestrator.runs import RunDir

METRICS_FILE = "metrics.json"
SAMPLES_DIR = "samples"
SAMPLES_INDEX = "samples.json"


@dataclass
class ArmResult:
    """How an arm ended, as the runner (or a cluster sweep) knows it. ``run_dir`` is None if it never started."""

    label: str
    backend: str
    status: str  # finished | failed | skipped | interrupted
    reason: str | None = None
    run_dir: Path | None = None
    varied: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SampleImage:
    prompt: str
    seed: int
    trigger: bool  # False for the prompt without the trigger (shows leakage)
    path: Path


@dataclass
class ArmData:
    """Everything the report shows for one arm."""

    label: str
    backend: str
    status: str
    reason: str | None = None
    run_dir: Path | None = None
    varied: dict[str, Any] = field(default_factory=dict)
    wall_s: float | None = None
    first_step_s: float | None = None
    steps_per_s: float | None = None
    peak_ram_bytes: int | None = None
    peak_gpu_bytes: int | None = None
    gpu: str | None = None
    step: int | None = None
    total: int | None = None
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    final_loss: float | None = None
    lora: LoraSummary | None = None
    lora_error: str | None = None
    samples: list[SampleImage] = field(default_factory=list)
    samples_note: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # the run's job.yaml, flattened to dotted keys


def load_arm(item: ArmResult | Path | str) -> ArmData:
    """An arm from the runner's result, or from a run folder path alone."""
    if not isinstance(item, ArmResult):
        run = RunDir(Path(item))
        state = run.state()
        if not run.job_file.exists():
            return ArmData(run.path.name, str(state.get("backend", "?")), "failed", "not a run folder (no job.yaml)")
        status = str(state.get("status", "?"))
        item = ArmResult(run.path.name, str(state.get("backend", "?")), status, None, run.path)
    data = ArmData(item.label, item.backend, item.status, item.reason, item.run_dir, dict(item.varied))
    if item.run_dir is None or not Path(item.run_dir).is_dir():
        return data
    _read_run(RunDir(Path(item.run_dir)), data)
    return data


def _read_run(run: RunDir, data: ArmData) -> None:
    metrics = _read_json(run.path / METRICS_FILE)
    if isinstance(metrics, dict):
        data.label = str(metrics.get("label") or data.label)
        data.varied = dict(metrics.get("varied") or data.varied)
        for name in ("wall_s", "first_step_s", "steps_per_s", "peak_ram_bytes", "peak_gpu_bytes", "gpu"):
            if metrics.get(name) is not None:
                setattr(data, name, metrics[name])
    state = run.state()
    if data.wall_s is None and isinstance(state.get("seconds"), int | float):
        data.wall_s = float(state["seconds"])
    if data.status in ("?", "running", "created") and state.get("status"):
        data.status = str(state["status"])

    events = read_events(run.events_file)
    curve: dict[int, float] = {}
    speeds: list[float] = []
    lora_path: str | None = None
    for event in events:
        if isinstance(event, Progress):
            data.step, data.total = event.step, event.total or data.total
            if event.loss is not None:
                curve[event.step] = event.loss  # a later reading of the same step wins (sd-scripts draws twice)
                data.final_loss = event.loss
            if event.it_per_s:
                speeds.append(event.it_per_s)
        elif isinstance(event, Failure) and data.reason is None:
            data.reason = f"{event.kind}: {event.message}" + (f" (fix: {event.hint})" if event.hint else "")
        elif isinstance(event, Finished):
            lora_path = event.lora_path
    data.loss_curve = sorted(curve.items())
    if data.steps_per_s is None and speeds:
        data.steps_per_s = statistics.median(speeds)  # the backend's own reading, when the runner measured none
    if data.status == "finished" and data.final_loss is None and data.reason is None:
        data.reason = "no loss was reported"

    lora = _lora_file(run, lora_path)
    if lora is not None:
        try:
            data.lora = summarize_lora(lora)
        except (OSError, ValueError) as exc:
            data.lora_error = str(exc)
    data.samples, data.samples_note = _read_samples(run)
    try:
        job = read_yaml(run.job_file, "run job file") or {}
    except (OSError, LoraforgeError):
        job = {}
    data.settings = flatten(job) if isinstance(job, dict) else {}


def _lora_file(run: RunDir, finished_path: str | None) -> Path | None:
    """The LoRA the Finished event names (a folder copied elsewhere keeps its output/), else the one in output/."""
    if finished_path:
        for candidate in (Path(finished_path), run.output / Path(finished_path).name):
            if candidate.is_file():
                return candidate
    files = sorted(run.output.glob("*.safetensors")) if run.output.is_dir() else []
    return files[0] if len(files) == 1 else None


def _read_samples(run: RunDir) -> tuple[list[SampleImage], str | None]:
    index = _read_json(run.path / SAMPLES_DIR / SAMPLES_INDEX)
    if not isinstance(index, dict):
        return [], None
    samples = []
    for row in index.get("images") or []:
        path = Path(row["path"])
        if not path.is_absolute():
            path = run.path / SAMPLES_DIR / path
        samples.append(SampleImage(str(row["prompt"]), int(row["seed"]), bool(row.get("trigger", True)), path))
    return samples, index.get("note")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"network": {"rank": 8}}`` -> ``{"network.rank": 8}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat
