"""`loraforge render --explain`: every resolved job value and the layer it came from."""

from __future__ import annotations

from typing import Any

from orchestrator.job import JobSpec, job_to_dict


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    leaves: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("args",):
            leaves.update(_leaves(value, path + "."))
        else:
            leaves[path] = value
    return leaves


def sources(layers: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """dotted path -> name of the last (winning) layer that set it."""
    origin: dict[str, str] = {}
    for name, layer in layers:
        for path in _leaves(layer):
            origin[path] = name
            # steps and epochs replace each other across layers (see job.merge_layers)
            if path == "training.steps":
                origin.pop("training.epochs", None)
            elif path == "training.epochs":
                origin.pop("training.steps", None)
    return origin


def explain(job: JobSpec, layers: list[tuple[str, dict[str, Any]]]) -> str:
    origin = sources(layers)
    resolved = _leaves(job_to_dict(job))
    width = max(len(p) for p in resolved)
    lines = []
    for path, value in resolved.items():
        where = origin.get(path)
        if where is None and any(o.startswith(path + ".") for o in origin):
            where = "mixed"
        lines.append(f"{path:<{width}}  {value!r:<40}  {where or 'default'}")
    return "\n".join(lines) + "\n"
