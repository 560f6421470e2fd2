"""Arms of a comparison: every backend crossed with every combination of the ``--vary`` values.

``--backends kohya,simpletuner --vary network.rank=8,16`` gives four arms. Each arm is a full, validated JobSpec
built through the same layering as ``loraforge train`` (the varied value is the top layer), so a bad field or value
is reported with its dotted path like any other job setting.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError, LoraforgeError
from orchestrator.job import JobSpec, build_job, merge_layers, parse_scalar


@dataclass(frozen=True)
class Arm:
    label: str  # "simpletuner network.rank=8": what the report and the terminal call it
    backend: str
    job: JobSpec
    varied: dict[str, Any] = field(default_factory=dict)  # dotted field -> value, only the --vary fields


def parse_vary(text: str) -> tuple[str, list[Any]]:
    """``network.rank=8,16`` -> ``("network.rank", [8, 16])``; each value read like ``--set`` reads one."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise LoraforgeError(f"--vary {text!r}: expected FIELD=V1,V2", "e.g. --vary network.rank=8,16")
    values = [parse_scalar(part) for part in raw.split(",") if part.strip()]
    if len(values) != len({repr(v) for v in values}):
        raise LoraforgeError(f"--vary {text!r}: a value is given twice", "list each value once")
    return key, values


def parse_backends(text: str) -> list[str]:
    from backends.base import names

    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in names()]
    if unknown:
        raise LoraforgeError(f"--backends: unknown backend {unknown[0]!r}", f"choose from: {', '.join(names())}")
    if not chosen:
        raise LoraforgeError("--backends is empty", f"e.g. --backends {','.join(names())}")
    if len(chosen) != len(set(chosen)):
        raise LoraforgeError(f"--backends {text!r}: a backend is given twice", "list each backend once")
    return chosen


def expand_arms(
    data: dict[str, Any], backends: list[str], vary: list[str] | None = None, source: str | None = None
) -> list[Arm]:
    """All arms for the merged job layers ``data``. Every arm's job is validated; all problems reported at once."""
    return grid_arms(data, backends, [parse_vary(text) for text in vary or []], source)


def load_sweep(path: str) -> list[tuple[str, list[Any]]]:
    """A sweep file: YAML mapping each dotted JobSpec field to its list of values (``network.rank: [8, 16]``)."""
    from orchestrator.job import read_yaml

    data = read_yaml(Path(path), "sweep file")
    if not isinstance(data, dict) or not data:
        raise LoraforgeError(f"{path}: a sweep is a mapping of fields to value lists", "e.g. network.rank: [8, 16]")
    axes = []
    for key, values in data.items():
        if not isinstance(values, list) or not values:
            raise LoraforgeError(f"{path}: {key} needs a non-empty list of values", f"e.g. {key}: [V1, V2]")
        axes.append((str(key), values))
    return axes


def grid_arms(
    data: dict[str, Any], backends: list[str], axes: list[tuple[str, list[Any]]], source: str | None = None
) -> list[Arm]:
    """Every backend crossed with every combination of the axes' values."""
    keys = [key for key, _ in axes]
    if len(keys) != len(set(keys)):
        raise LoraforgeError("--vary names the same field twice", "give each field once, with all its values")
    combos = list(itertools.product(*(values for _, values in axes))) if axes else [()]
    base_name = str(data.get("name") or "job")
    arms: list[Arm] = []
    problems: list[str] = []
    for backend in backends:
        for combo in combos:
            varied = dict(zip(keys, combo, strict=True))
            label = " ".join([backend, *(f"{key}={_show(value)}" for key, value in varied.items())])
            layers = [data, *(_layer(key, value) for key, value in varied.items())]
            merged = merge_layers(*layers)
            merged["name"] = _job_name(base_name, label)
            try:
                arms.append(Arm(label, backend, build_job(merged, source), varied))
            except ConfigError as exc:
                problems.extend(p for p in exc.problems if p not in problems)
    if problems:
        raise ConfigError(problems, source)
    return arms


def _layer(key: str, value: Any) -> dict[str, Any]:
    node: dict[str, Any] = {}
    cursor = node
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return node


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _job_name(base: str, label: str) -> str:
    """A job (and run folder) name per arm: the job's name plus the label, in the characters a name allows."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label.replace("=", "-")).strip("-.")
    return f"{base}-{slug}"[:100]
