"""Which backend option each job setting becomes, per backend, and what is not equivalent between backends.

Found by asking the backends, not from a table kept here: each backend renders the job into a scratch folder, then
renders it again with one setting changed; the rendered options that changed are that setting's mapping. A setting
that changes nothing in one backend's files while it does in another's is not expressed there: not equivalent.
Everything a backend reports it could not express (``Rendered.notes``) is listed too. A third backend needs no
change here.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from orchestrator.compare.rundata import flatten
from orchestrator.errors import LoraforgeError
from orchestrator.job import JobSpec, job_to_dict

if TYPE_CHECKING:
    from orchestrator.preflight import Ready

# The settings that decide what is learned and how; output paths, names and sampling do not.
SECTIONS = ("network", "training", "saving")
SKIPPED_FIELDS = {"network.args"}


@dataclass
class FieldMapping:
    field: str
    value: Any
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # backend -> {option: rendered value}
    refused: list[str] = field(default_factory=list)  # backends that refused the probe value (mapping unknown)


@dataclass
class Equivalence:
    backends: list[str]
    mappings: list[FieldMapping] = field(default_factory=list)
    not_equivalent: list[str] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # backend -> its own Rendered.notes
    unavailable: dict[str, str] = field(default_factory=dict)  # backend -> why it could not render

    def to_json(self) -> dict[str, Any]:
        return {
            "backends": self.backends,
            "mapping": [{"field": m.field, "value": m.value, "options": m.options} for m in self.mappings],
            "not_equivalent": self.not_equivalent,
            "notes": self.notes,
            "unavailable": self.unavailable,
        }


def check_equivalence(job: JobSpec, backends: list[str], scratch: Path | None = None) -> Equivalence:
    """Render ``job`` with every backend (and once per perturbed setting) under ``scratch``, then compare.
    ``scratch`` (default: a temporary folder) is removed afterwards."""
    from orchestrator.preflight import preflight

    result = Equivalence(list(backends))
    root = Path(tempfile.mkdtemp(prefix="loraforge-compare-")) if scratch is None else scratch
    try:
        for backend_name in backends:
            workdir = root / backend_name
            try:
                ready = preflight(job, backend_name, need_env=False)
                baseline, notes = _render(ready, ready.job, workdir)
                again, _ = _render(ready, ready.job, workdir)
            except (LoraforgeError, ImportError) as exc:
                result.unavailable[backend_name] = _why(exc)
                continue
            probes = [(name, alt) for name in setting_names(ready.job) if (alt := alternative(ready.job, name))]
            # Options that differ between two renders of the same job (ports, ids) say nothing about a setting.
            noise = {k for k in set(baseline) | set(again) if baseline.get(k) != again.get(k)}
            result.notes[backend_name] = notes
            for name, alt in probes:
                mapping = _mapping(result, name, ready.job)
                try:
                    values, _ = _render(ready, alt, workdir)
                except LoraforgeError:
                    mapping.refused.append(backend_name)  # only the probe value was refused: says nothing here
                    continue
                changed = {k: baseline.get(k) for k in sorted(set(values) | set(baseline)) if k not in noise}
                mapping.options[backend_name] = {k: v for k, v in changed.items() if values.get(k) != v}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result.not_equivalent = _differences(result)
    return result


def _render(ready: Ready, job: JobSpec, workdir: Path) -> tuple[dict[str, Any], list[str]]:
    """The backend's options for ``job`` (the checked job, or it with one setting changed): its Rendered.values,
    plus the content of every other rendered file it can be parsed from (a dataset file holds repeats and
    resolution), as flat dotted keys."""
    from orchestrator.runs import RunDir
    from orchestrator.steps import apply_step_plan

    if workdir.exists():
        shutil.rmtree(workdir)
    run = RunDir(workdir)
    for folder in (run.rendered, run.logs, run.output):
        folder.mkdir(parents=True)
    job, _ = apply_step_plan(job, ready.dataset.sizes(), ready.backend.name)  # a probe may give epochs
    rendered = ready.backend.render(job, ready.dataset, run, ready.env)
    values = _flat(dict(rendered.values))
    for label, path in sorted(rendered.files.items()):
        content = _parse(path)
        if content is not None and content != rendered.values:
            values.update(_flat(content, f"{label}:"))
    text = str(workdir)
    return {k: _scrub(v, text) for k, v in values.items()}, list(rendered.notes)


def _parse(path: Path) -> Any:
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text(encoding="utf-8"))
        if path.suffix == ".toml":
            return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return None


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists of mappings as dotted keys (``datasets.0.subsets.0.num_repeats``)."""
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        items = list(enumerate(node))
    else:
        return {prefix.rstrip("."): node}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


def _scrub(value: Any, workdir: str) -> Any:
    """Paths inside the scratch folder would differ from the real run's: show them relative to the run folder."""
    if isinstance(value, str) and workdir in value:
        return value.replace(workdir, "<rendered>")
    if isinstance(value, list):
        return [_scrub(v, workdir) for v in value]
    return value


def _mapping(result: Equivalence, name: str, job: JobSpec) -> FieldMapping:
    for mapping in result.mappings:
        if mapping.field == name:
            return mapping
    mapping = FieldMapping(name, flatten(job_to_dict(job)).get(name))
    result.mappings.append(mapping)
    return mapping


def _differences(result: Equivalence) -> list[str]:
    lines: list[str] = []
    rendered = [b for b in result.backends if b not in result.unavailable]
    for backend, reason in result.unavailable.items():
        lines.append(f"{backend}: could not render the job, so nothing about it is compared ({reason})")
    if len(rendered) > 1:
        for mapping in result.mappings:
            expressed = [b for b in rendered if mapping.options.get(b)]
            silent = [b for b in rendered if not mapping.options.get(b) and b not in mapping.refused]
            if expressed and silent:
                shown = ", ".join(f"{b} ({', '.join(mapping.options[b])})" for b in expressed)
                lines.append(
                    f"{mapping.field} = {mapping.value!r}: set by {shown}; not expressed by {', '.join(silent)}"
                )
    for backend in rendered:
        lines.extend(f"{backend}: {note}" for note in result.notes.get(backend, []))
    return lines


def _why(exc: BaseException) -> str:
    if isinstance(exc, LoraforgeError):
        return exc.message + (f" (fix: {exc.hint})" if exc.hint else "")
    return f"{type(exc).__name__}: {exc}"


# --- perturbing one setting -----------------------------------------------------------------------------------


def setting_names(job: JobSpec) -> list[str]:
    """Dotted names of the scalar settings in SECTIONS (``training.steps``, ``network.rank``, ...)."""
    names = []
    for section in SECTIONS:
        model = getattr(job, section)
        for name, info in type(model).model_fields.items():
            dotted = f"{section}.{name}"
            if dotted in SKIPPED_FIELDS or _is_mapping(info.annotation):
                continue
            if dotted == "training.epochs" and job.training.steps is not None:
                continue  # steps decide the length; epochs would not change the rendered files
            if dotted == "training.steps" and job.training.steps is None:
                continue
            names.append(dotted)
    return names


def alternative(job: JobSpec, dotted: str) -> JobSpec | None:
    """``job`` with ``dotted`` set to some other valid value, or None when no candidate validates."""
    section, name = dotted.split(".", 1)
    model = getattr(job, section)
    current = getattr(model, name)
    for candidate in _candidates(current, type(model).model_fields[name].annotation):
        data = job.model_dump()
        data[section][name] = candidate
        try:
            return JobSpec.model_validate(data)
        except ValidationError:
            continue
    return None


def _candidates(current: Any, annotation: Any) -> list[Any]:
    annotation = _plain(annotation)
    args = [_plain(a) for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return [v for v in args if v != current]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
        if typing.get_origin(annotation) is Literal:
            return [v for v in typing.get_args(annotation) if v != current]
    annotation = _plain(annotation)
    if annotation is bool:
        return [not current]
    if annotation is int:
        base = current if isinstance(current, int) else 2
        return [base + 1, base * 2, base + 64, max(base - 1, 1)] if current is not None else [2, 4, 64]
    if annotation is float:
        if current is None:
            return [0.1, 0.05, 5.0, 1e-5]
        return [current * 2, current / 2, current + 0.1] if current else [0.1, 1e-5]
    return []


def _plain(annotation: Any) -> Any:
    """The type under Annotated[...] (a strict number is still a number)."""
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation


def _is_mapping(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict or annotation is dict
