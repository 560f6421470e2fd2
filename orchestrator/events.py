"""The unified event stream every backend's output is turned into.

Events are small frozen dataclasses. They are written as JSON lines to ``events.jsonl`` in the run folder, drawn
by :mod:`orchestrator.display`, and printed with ``--json`` for scripts. ``event_from_dict`` reads them back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, ClassVar

# A run's phases, in the only order they happen. The run's event sink drops a phase that would go back (a trainer
# that reloads something mid-run, a checkpoint save): each phase appears once, and "done" is last.
PHASES = ("setup", "loading", "caching", "training", "saving", "done")


@dataclass(frozen=True)
class Phase:
    """The run entered a phase (one of PHASES)."""

    name: str
    kind: ClassVar[str] = "phase"


@dataclass(frozen=True)
class Progress:
    """One optimizer step (or a fresher reading of it). ``total`` is the number of steps the backend will run."""

    step: int
    total: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    lr: float | None = None
    it_per_s: float | None = None
    eta_s: float | None = None
    kind: ClassVar[str] = "progress"


@dataclass(frozen=True)
class Checkpoint:
    path: str
    step: int | None = None
    kind: ClassVar[str] = "checkpoint"


@dataclass(frozen=True)
class Sample:
    path: str
    step: int | None = None
    prompt: str | None = None
    kind: ClassVar[str] = "sample"


@dataclass(frozen=True)
class Validation:
    """A validation loss measured by the backend at ``step``."""

    step: int
    loss: float
    kind: ClassVar[str] = "validation"


@dataclass(frozen=True)
class Log:
    level: str
    text: str
    kind: ClassVar[str] = "log"


@dataclass(frozen=True)
class Failure:
    """The run failed. ``kind`` is one of FAILURE_KINDS; ``message`` is one line; ``hint`` says what to do."""

    kind: str
    message: str
    hint: str | None = None
    log_tail: list[str] = field(default_factory=list)
    log_path: str | None = None
    kind_tag: ClassVar[str] = "failure"


@dataclass(frozen=True)
class Finished:
    lora_path: str | None
    seconds: float
    kind: ClassVar[str] = "finished"


FAILURE_KINDS = (
    "model_not_found",
    "model_mismatch",  # the model is not the family the job says, or not a model the trainer reads
    "out_of_memory",
    "not_installed",
    "bad_argument",
    "disk_full",
    "interrupted",
    "killed",
    "network",
    "distributed",  # a process of a multi-process run died or a collective timed out
    "other",
)

Event = Phase | Progress | Checkpoint | Sample | Validation | Log | Failure | Finished

_TYPES: dict[str, type] = {
    "phase": Phase,
    "progress": Progress,
    "checkpoint": Checkpoint,
    "sample": Sample,
    "validation": Validation,
    "log": Log,
    "failure": Failure,
    "finished": Finished,
}


def event_type(event: Event) -> str:
    return "failure" if isinstance(event, Failure) else event.kind  # Failure.kind is a field, not the tag


def event_to_dict(event: Event) -> dict[str, Any]:
    return {"event": event_type(event), **asdict(event)}


def event_from_dict(data: dict[str, Any]) -> Event:
    data = dict(data)
    cls = _TYPES[data.pop("event")]
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def event_to_json(event: Event) -> str:
    return json.dumps(event_to_dict(event), ensure_ascii=False)


class EventLog:
    """Appends events to a JSONL file, one flushed line per event, so a killed run keeps what it saw."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def write(self, event: Event) -> None:
        self._file.write(event_to_json(event) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_events(path: Path) -> list[Event]:
    events: list[Event] = []
    if not path.exists():
        return events
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                events.append(event_from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a killed run
    return events
