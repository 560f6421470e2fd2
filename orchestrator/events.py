"""The unified event stream every backend's output is turned into.

Events are small frozen dataclasses. They are written as JSON lines to ``events.jsonl`` in the run folder, drawn
by :mod:`orchestrator.display`, and printed with ``--json`` for scripts. ``event_from_dict`` reads them back.
"""

from __future__ import annotations

import contextlib
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


def progress(
    step: int,
    total: int | None,
    epoch: int | None,
    epochs: int | None,
    loss: float | None,
    lr: float | None,
    it_per_s: float | None,
    eta_s: float | None,
) -> Progress:
    """``Progress(...)``, equal in every way, for a log parser's hot path (one per training step): a frozen
    dataclass sets each field through ``object.__setattr__``, a third of a bar-heavy log's parsing time."""
    event = object.__new__(Progress)
    event.__dict__.update(
        step=step, total=total, epoch=epoch, epochs=epochs, loss=loss, lr=lr, it_per_s=it_per_s, eta_s=eta_s
    )
    return event


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
    """The event a dict describes; ValueError (naming the field) for an unknown event or a field of the wrong type,
    so a line written by anything but loraforge (a spoofed webhook, a hand edit) never becomes an event that
    crashes a reader later. Unknown fields are ignored (a newer loraforge may add some)."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    tag = data.get("event")
    cls = _TYPES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise ValueError(f"unknown event {str(tag)[:40]!r}")
    values = {}
    for f in fields(cls):
        if f.name in data:
            _check_type(f.name, data[f.name], _FIELD_TYPES[cls][f.name])
            values[f.name] = data[f.name]
    try:
        return cls(**values)
    except TypeError:  # a required field is missing
        missing = [f.name for f in fields(cls) if f.name not in values and _required(f)]
        raise ValueError(f"{tag} event without {', '.join(missing)}") from None


def _required(f: Any) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


# The JSON value types each annotation an event field may have accepts (a float field takes 3 as well as 3.0).
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "None": (type(None),),
    "list[str]": (list,),
}


def _allowed(annotation: str) -> tuple[type, ...]:
    """The JSON types a field's annotation (a string, as ``from __future__ import annotations`` leaves it) allows."""
    allowed: tuple[type, ...] = ()
    for part in (p.strip() for p in annotation.split("|")):
        if part not in _JSON_TYPES:
            raise TypeError(f"an event field of type {annotation}: add how to check {part} to _JSON_TYPES")
        allowed += _JSON_TYPES[part]
    return allowed


_FIELD_TYPES = {cls: {f.name: _allowed(str(f.type)) for f in fields(cls)} for cls in _TYPES.values()}


def _check_type(name: str, value: Any, allowed: tuple[type, ...]) -> None:
    ok = isinstance(value, allowed) and not isinstance(value, bool)  # JSON true is no step number
    if ok and isinstance(value, list):
        ok = all(isinstance(item, str) for item in value)
    if not ok:
        wanted = " or ".join(sorted({"null" if t is type(None) else t.__name__ for t in allowed}))
        raise ValueError(f"{name} must be {wanted}, got {json.dumps(value)[:40]}")


def event_to_json(event: Event) -> str:
    return json.dumps(event_to_dict(event), ensure_ascii=False)


class EventLog:
    """Appends events to a JSONL file, one flushed line per event, so a killed run keeps what it saw.

    A write that fails (disk full, I/O error, a read-only remount) never stops the run: the log stops writing and
    keeps the error in ``error`` for the run to report; the events still reach the display."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: OSError | None = None
        self._file: IO[str] | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")
        except OSError as exc:
            self._failed(exc)

    def write(self, event: Event) -> None:
        if self._file is None:
            return
        try:
            self._file.write(event_to_json(event) + "\n")
            self._file.flush()
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        self.error = exc if exc.filename is not None else type(exc)(exc.errno, exc.strerror, str(self.path))
        self.close()

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):  # bytes still buffered may not fit on the disk any more
                file.close()


def read_events(path: Path, problems: list[str] | None = None) -> list[Event]:
    """The events of an events.jsonl file. A line that is not a valid event (torn by a killed run, written by
    something else, a field of the wrong type) is skipped, and so is a file that cannot be read; each is described
    in ``problems`` when given (for a warning), never raised."""
    events: list[Event] = []
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return events
    except OSError as exc:
        if problems is not None:
            problems.append(f"{path}: cannot be read ({exc.strerror or exc})")
        return events
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(event_from_dict(json.loads(line)))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            if problems is not None:
                problems.append(f"{path} line {number}: skipped ({_reason(exc)})")
    return events


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, json.JSONDecodeError | RecursionError):
        return "not a JSON line"
    return str(exc)
