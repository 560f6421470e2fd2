"""The runs list, from the run folders themselves (run.json, job.yaml, events.jsonl), kept up to date cheaply.

``runs.summarize`` reads a run's whole events.jsonl; with hundreds of runs, some long, that is too slow for every
page load. The index reads each events.jsonl incrementally instead (only the bytes appended since the last look)
and re-reads run.json only when its modification time changes, so a page load costs a few stat calls per run.
The events are the same Event objects (orchestrator.events) the CLI reads.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.events import Failure, Finished, Phase, Progress, event_from_dict
from orchestrator.runs import RunDir, list_runs
from orchestrator.web.live import Tail

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
PROGRESS_PREFIX = '{"event": "progress"'  # how orchestrator.events writes a progress line


@dataclass
class RunRow:
    name: str
    backend: str
    family: str | None
    base_model: str | None
    trigger: str | None
    status: str
    phase: str | None
    step: int | None
    total: int | None
    loss: float | None
    it_per_s: float | None
    eta_s: float | None
    lora: str | None  # the final LoRA's path inside the run folder, relative
    failure: str | None
    created: float
    updated: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)  # flat fields: a plain copy (dataclasses.asdict recurses, 10x slower)


class _Entry:
    """What the index knows of one run folder, and how far it has read it."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.tail = Tail(run.events_file)
        self.state: dict[str, Any] = {}
        self.state_mtime: int | None = None
        self.job: dict[str, Any] | None = None
        self.progress: Progress | None = None
        self.phase: str | None = None
        self.lora: str | None = None
        self.failure: str | None = None
        self.updated = 0.0
        self.row: RunRow | None = None  # the last row made, reused while nothing changed

    def refresh(self) -> RunRow:
        lines = self.tail.read()
        changed = bool(lines)
        # Only the last step matters here: of a run of progress lines (most of the file, as EventLog writes
        # them) only the last is decoded; every other line is decoded in full.
        last_progress = None
        for line in lines:
            if line.startswith(PROGRESS_PREFIX):
                last_progress = line
            else:
                self._see(line)
        if last_progress is not None:
            self._see(last_progress)
        try:
            stat = os.stat(self.run.state_file)
            mtime, self.updated = stat.st_mtime_ns, stat.st_mtime
        except OSError:
            mtime = None
        if mtime != self.state_mtime:
            self.state, self.state_mtime = self.run.state(), mtime
            changed = True
        if self.job is None:
            self.job = self._read_job()
        if changed or self.row is None:
            self.row = self._row()
        return self.row

    def _see(self, line: str) -> None:
        try:
            event = event_from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(event, Progress):
            self.progress = event
        elif isinstance(event, Phase):
            self.phase = event.name
        elif isinstance(event, Finished):
            self.lora = event.lora_path
        elif isinstance(event, Failure):
            self.failure = f"{event.kind}: {event.message}"

    def _row(self) -> RunRow:
        assert self.job is not None
        progress = self.progress
        return RunRow(
            name=self.run.path.name,
            backend=str(self.state.get("backend", "?")),
            family=self.job.get("family"),
            base_model=self.job.get("base_model"),
            trigger=self.job.get("trigger"),
            status=str(self.state.get("status", "?")),
            phase=self.phase,
            step=progress.step if progress else None,
            total=progress.total if progress else None,
            loss=progress.loss if progress else None,
            it_per_s=progress.it_per_s if progress else None,
            eta_s=progress.eta_s if progress else None,
            lora=self._lora(),
            failure=self.failure,
            created=float(self.state.get("created") or 0.0),
            updated=max(self.updated, self.tail.mtime),
        )

    def _read_job(self) -> dict[str, Any]:
        try:
            data = yaml.load(self.run.job_file.read_text(encoding="utf-8"), Loader=_Loader)
        except (OSError, yaml.YAMLError):
            return {}
        return data if isinstance(data, dict) else {}

    def _lora(self) -> str | None:
        """The final LoRA the Finished event names; for a finished run whose event names none, the one the job's
        name gives in output/ (the same place `loraforge compare` looks)."""
        found = self._relative(self.lora)
        if found is None and self.state.get("status") == "finished" and self.job:
            output = self.job.get("output")
            name = (output.get("name") if isinstance(output, dict) else None) or self.job.get("name")
            if name and (self.run.output / f"{name}.safetensors").is_file():
                found = f"output/{name}.safetensors"
        return found

    def _relative(self, lora: str | None) -> str | None:
        if not lora:
            return None
        path = Path(lora)
        for candidate in (path, self.run.output / path.name):
            try:
                return candidate.resolve().relative_to(self.run.path.resolve()).as_posix()
            except (OSError, ValueError):
                continue
        return None


class RunIndex:
    """Rows for every run folder under ``root``, newest first."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def rows(self) -> list[RunRow]:
        with self._lock:
            runs = list_runs(self.root)
            names = {run.path.name for run in runs}
            for gone in set(self._entries) - names:
                del self._entries[gone]
            rows = []
            for run in reversed(runs):
                entry = self._entries.get(run.path.name)
                if entry is None:
                    entry = self._entries[run.path.name] = _Entry(run)
                rows.append(entry.refresh())
            return rows

    def row(self, name: str) -> RunRow | None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                run = RunDir(self.root / name)
                if not run.job_file.exists():
                    return None
                entry = self._entries[name] = _Entry(run)
            return entry.refresh()
