"""SimpleTuner's raw webhook payloads -> events, every field type-checked before it is used.

SimpleTuner (``webhook_type: raw``) posts one JSON object per event to loraforge's loopback receiver:
``training.status`` (a step's reading: ``progress.current/total/eta_seconds`` and ``progress.metrics.loss``; the
first one of a run, "Running training", has no ``progress`` yet and is not a step), ``training.checkpoint``,
``lifecycle.stage`` (``stage.key`` and ``stage.status``), ``log.message``, ``notification``.

:func:`translate` is a pure function of one payload. Ordering (phases only forward, one Progress per step, each
checkpoint once) is the parser's job, since the same events can also come from the trainer's output. A payload
with a field of the wrong type (``"loss": "x"``, a list where an object belongs, a negative or absurd step, NaN)
raises :class:`BadPayload`: it is dropped whole and counted, never half turned into events.
"""

from __future__ import annotations

import math
import re
from typing import Any

from orchestrator.events import Checkpoint, Event, Log, Phase, Progress

MAX_STEP = 100_000_000  # far beyond any real run; a larger "step" is garbage, not progress
MAX_TEXT = 2000  # a log message or path longer than this is cut, never stored whole

# lifecycle.stage keys (status "running") -> phases. Checkpoint saves are not a phase: training goes on after them.
STAGE_PHASES = {
    "init_data_backend": "loading",
    "init_load_base_model": "loading",
    "init_prepare_models": "loading",
    "init_resume_checkpoint": "loading",
    "init_text_embed_cache": "caching",
    "init_vae_cache": "caching",
    "model_save": "saving",
}
_CHECKPOINT = re.compile(r"checkpoint-(\d+)$")


class BadPayload(ValueError):
    """A payload field the translation uses has the wrong type or an impossible value."""


def translate(message: dict[str, Any]) -> list[Event]:
    """The events one payload carries (possibly none: notifications, info logs, stages that are no phase)."""
    kind = _text(message, "type")
    if kind == "training.status":
        return _status(message)
    if kind == "training.checkpoint":
        path = _text(_object(message, "checkpoint"), "path")
        if not path:
            return []
        match = _CHECKPOINT.search(path.rstrip("/"))
        return [Checkpoint(path[:MAX_TEXT], int(match.group(1)) if match else None)]
    if kind == "lifecycle.stage":
        stage = _object(message, "stage")
        key, status = _text(stage, "key"), _text(stage, "status")
        if status == "running" and key in STAGE_PHASES:
            return [Phase(STAGE_PHASES[key])]
        return []  # training_complete among them: "done" is the orchestrator's, after it has the LoRA
    if kind == "log.message" and _text(message, "severity") in ("error", "critical"):
        return [Log("error", (_text(message, "message") or "")[:MAX_TEXT])]
    return []


def _status(message: dict[str, Any]) -> list[Event]:
    progress, data = _object(message, "progress"), _object(message, "data")
    metrics = _object(progress, "metrics")
    step = _first(_count(progress, "current"), _count(data, "global_step"))
    if step is None:
        return []
    if "eta_seconds" not in progress:  # "Running training": where the run starts (0, or the resumed step)
        return [Phase("training")]
    loss = _number(metrics, "loss")
    if loss is None:
        return [Phase("training")]  # a reading without a loss is no step's reading
    seconds = _number(metrics, "seconds_per_step")
    eta = _number(progress, "eta_seconds")
    return [
        Phase("training"),
        Progress(
            step=step,
            total=_first(_count(progress, "total"), _count(data, "total_num_steps")),
            epoch=_first(_count(data, "current_epoch"), _count(metrics, "epoch")),
            epochs=_first(
                _count(data, "total_num_epochs"), _count(data, "final_epoch"), _count(metrics, "total_epochs")
            ),
            loss=loss,
            lr=_number(metrics, "learning_rate"),
            it_per_s=1.0 / seconds if seconds else None,
            eta_s=eta if eta is None or eta >= 0 else None,
        ),
    ]


# --- typed reads: absent (or null) is None; present with the wrong type raises ------------------------------------


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadPayload(f"{key} is a {type(value).__name__}, not an object")
    return value


def _text(parent: dict[str, Any], key: str) -> str | None:
    value = parent.get(key)
    if value is None or isinstance(value, str):
        return value
    raise BadPayload(f"{key} is a {type(value).__name__}, not a string")


def _number(parent: dict[str, Any], key: str) -> float | None:
    value = parent.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadPayload(f"{key}={value!r} is not a finite number")
    return float(value)


def _count(parent: dict[str, Any], key: str) -> int | None:
    """A step, total or epoch: a whole number from 0 to MAX_STEP (SimpleTuner writes some as 2.0)."""
    value = _number(parent, key)
    if value is None:
        return None
    if not value.is_integer() or not 0 <= value <= MAX_STEP:
        raise BadPayload(f"{key}={value!r} is not a count")
    return int(value)


def _first(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)
