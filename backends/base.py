"""The Backend protocol and the registry of backends by name.

A backend turns a JobSpec into its own config files (``render``), an argv (``command``, a pure function), a
stateful log parser (``parser``), the files it writes while running that the run watches for samples and metrics
(``watched``) and, after the child exits, the files it produced (``collect``). It never
imports the trainer: trainers run as subprocesses in their own Python environments.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from orchestrator.envs import BackendEnv
    from orchestrator.events import Event
    from orchestrator.job import JobSpec
    from orchestrator.watch import Watched


@dataclass(frozen=True)
class Problem:
    """Something wrong with a backend environment, and the exact command that fixes it."""

    message: str
    fix: str | None = None


@dataclass
class Rendered:
    """Files written for one run, and every job setting the backend could not express (reported, never dropped)."""

    files: dict[str, Path]
    notes: list[str] = field(default_factory=list)
    values: dict[str, object] = field(default_factory=dict)  # the backend options as rendered, for --explain


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


@dataclass(frozen=True)
class Resume:
    """Where an interrupted run continues: a backend checkpoint/state folder and the step it was saved at."""

    state: Path
    step: int


@dataclass
class Artifacts:
    lora: Path | None
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)
    resume: Resume | None = None


@runtime_checkable
class LogParser(Protocol):
    def feed(self, data: bytes, stream: str) -> list[Event]:
        """Bytes as they arrive from one stream ("stdout" or "stderr"), in any chunking; events recognised so far."""
        ...

    def finish(self, returncode: int) -> list[Event]:
        """The child exited: flush partial lines; on failure, one Failure event with kind, message, hint, tail."""
        ...


@runtime_checkable
class Backend(Protocol):
    name: str
    families: frozenset[str]

    def check(self, env: BackendEnv) -> list[Problem]: ...

    def render(self, job: JobSpec, workdir: Path, *, resume: Resume | None = None) -> Rendered: ...

    def command(self, job: JobSpec, rendered: Rendered, env: BackendEnv) -> Launch: ...

    def parser(self) -> LogParser: ...

    def collect(self, job: JobSpec, workdir: Path) -> Artifacts: ...

    def watched(self, job: JobSpec, workdir: Path) -> list[Watched]:
        """Files the backend writes during the run that carry events its output does not (samples, metrics)."""
        ...


# name -> "module:attribute"; modules are imported only when the backend is used, so --help stays fast.
_REGISTRY: dict[str, str] = {}


def register(name: str, target: str) -> None:
    if name in _REGISTRY:
        raise ValueError(f"backend {name!r} is already registered ({_REGISTRY[name]})")
    _REGISTRY[name] = target


register("kohya", "backends.kohya:KohyaBackend")
register("simpletuner", "backends.simpletuner:SimpleTunerBackend")


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Backend:
    from orchestrator.errors import LoraforgeError

    if name not in _REGISTRY:
        raise LoraforgeError(f"unknown backend {name!r}", f"choose one of: {', '.join(names())}")
    module_name, _, attr = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)()
