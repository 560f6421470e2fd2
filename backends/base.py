"""The Backend protocol and the registry of backends by name.

A backend is a package under ``backends/`` (option mapping, environment, log parsing, the class) and one line in
the registry below. It never imports its trainer: trainers run as subprocesses in their own Python environments.
What it must provide, in the order a run uses it:

- ``name``, ``label`` (how messages name the trainer), ``families`` (what it trains), ``refused`` (families it
  does not train, each with the reason) and ``webhooks`` (True when the trainer posts structured events to a
  loopback receiver that loraforge runs for it).
- ``setup(request, console)``: create or register the backend's environment; returns it (not yet saved).
- ``check(env)``: problems with an environment, each with the command that fixes it. Reads, never changes anything.
- ``render(job, dataset, run, env, resume=, endpoint=)``: write the trainer's own files into ``run.rendered`` (and
  the per-run copy of the dataset it trains from, beside it), and return them with every note on what the trainer
  cannot express, the option values for ``--explain``, the files to watch during the run, and the caches a later
  run may reuse (orchestrator/reuse.py, each keyed by everything its content depends on). Everything it needs
  arrives as arguments; nothing is kept on the backend object for a later call.
- ``command(job, rendered, env)``: the argv, the environment variables to add and the working directory. A pure
  function of its arguments: no I/O, no reading ``os.environ``.
- ``parser(rendered)``: a fresh :class:`LogParser` for one run (stateful, incremental).
- ``collect(job, run)``: after the trainer exits, the LoRA it wrote, its checkpoints and the state to resume from.
- ``warm(env)``: how to start the trainer's interpreter ahead of its run (:class:`Warm`: the module its command runs
  with ``python -m``, the heavy modules to import meanwhile, the settings those imports read), or None when its
  command is not one process of ``python -m MODULE`` (it gains nothing: each run then starts cold).

``tests/unit/test_backend_conformance.py`` runs the same checks over every registered backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from orchestrator.dataset.model import Dataset
    from orchestrator.envs import BackendEnv
    from orchestrator.events import Event
    from orchestrator.job import JobSpec
    from orchestrator.reuse import Reuse
    from orchestrator.runs import RunDir
    from orchestrator.watch import Watched


@dataclass(frozen=True)
class Problem:
    """Something wrong with a backend environment, and the exact command that fixes it."""

    message: str
    fix: str | None = None


@dataclass(frozen=True)
class SetupRequest:
    """What `loraforge setup BACKEND` was asked for (and what `demo` asks for: all defaults)."""

    python: str | None = None  # interpreter to build the venv with; default: found on PATH or in pyenv
    venv: Path | None = None  # register this existing virtual environment instead of creating one
    root: Path | None = None  # the trainer's source checkout, where it has one (sd-scripts)
    force: bool = False  # recreate a venv loraforge created before


@dataclass(frozen=True)
class Endpoint:
    """The loopback receiver loraforge runs during a run for a backend with ``webhooks``: where to post, the job id
    to post under, and the secret that authenticates the trainer (it reaches the trainer through its environment,
    never its argv or a world-readable file)."""

    url: str
    job_id: str
    secret: str


@dataclass(frozen=True)
class Resume:
    """Where an interrupted run continues: a backend checkpoint/state folder and the step it was saved at."""

    state: Path
    step: int


@dataclass(frozen=True)
class Rendered:
    """The files written for one run, and what the later steps need from rendering."""

    files: dict[str, Path]
    data: Path  # the per-run folder of images and captions the trainer reads
    notes: list[str] = field(default_factory=list)  # job settings the backend could not express (never dropped)
    values: dict[str, Any] = field(default_factory=dict)  # the backend's options as rendered, for --explain
    watched: list[Watched] = field(default_factory=list)  # files written during the run that carry events
    endpoint: Endpoint | None = None  # the webhook receiver the files point at, if any
    reuse: list[Reuse] = field(default_factory=list)  # caches the run writes that a later run may reuse


@dataclass(frozen=True)
class Launch:
    """How to start the trainer. ``env`` holds only the variables to set; the launcher adds them to its own."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path


@dataclass(frozen=True)
class Warm:
    """A trainer's interpreter started early: ``imports`` are imported while loraforge still prepares, then the
    run's ``python -m module ARGS`` runs in it as it would in a fresh one (orchestrator/warm.py)."""

    module: str
    imports: tuple[str, ...]
    settings: dict[str, str] = field(default_factory=dict)  # environment the imports read (set before them)
    # modules the run imports only later (on its first step), imported after ``imports`` where they exist: a run
    # that imports them with its models loaded pays several times their cost; a failure is left to the run
    later: tuple[str, ...] = ()


@dataclass
class Artifacts:
    lora: Path | None
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)
    resume: Resume | None = None


@runtime_checkable
class LogParser(Protocol):
    def feed(self, data: bytes, stream: str) -> list[Event]:
        """Bytes as they arrive from one stream ("stdout" or "stderr"), in any chunking; events recognised so far.
        The same bytes give the same events however they are split."""
        ...

    def payload(self, message: dict[str, Any]) -> list[Event]:
        """One structured message from the side channel (a webhook body), already type-checked JSON. From the
        first one on, progress comes from the side channel and the byte parser only watches for failures."""
        ...

    def finish(self, returncode: int | None) -> list[Event]:
        """The output ended: flush partial lines; one Failure event if the run failed. ``returncode`` None (a log
        replayed without its exit status): failed when the log ends in an uncaught traceback."""
        ...


@runtime_checkable
class Backend(Protocol):
    name: str
    label: str
    families: frozenset[str]
    refused: Mapping[str, str]
    webhooks: bool

    def setup(self, request: SetupRequest, console: Any) -> BackendEnv: ...

    def check(self, env: BackendEnv) -> list[Problem]: ...

    def render(
        self,
        job: JobSpec,
        dataset: Dataset,
        run: RunDir,
        env: BackendEnv,
        *,
        resume: Resume | None = None,
        endpoint: Endpoint | None = None,
    ) -> Rendered: ...

    def command(self, job: JobSpec, rendered: Rendered, env: BackendEnv) -> Launch: ...

    def parser(self, rendered: Rendered | None = None) -> LogParser: ...

    def collect(self, job: JobSpec, run: RunDir) -> Artifacts: ...

    def warm(self, env: BackendEnv) -> Warm | None: ...


# name -> "module:attribute"; modules are imported only when the backend is used, so --help stays fast.
_REGISTRY: dict[str, str] = {}
# name -> "module:function" giving the backend's Warm from a light module (the class's warm() returns the same):
# read at a command's start, so the trainer's interpreter imports while loraforge still loads the backend itself
_WARM: dict[str, str] = {}


def register(name: str, target: str, *, warm: str | None = None) -> None:
    if name in _REGISTRY:
        raise ValueError(f"backend {name!r} is already registered ({_REGISTRY[name]})")
    _REGISTRY[name] = target
    if warm is not None:
        _WARM[name] = warm


register("kohya", "backends.kohya:KohyaBackend", warm="backends.kohya.warm:warm")
register("simpletuner", "backends.simpletuner:SimpleTunerBackend", warm="backends.simpletuner.warm:warm")


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Backend:
    from orchestrator.errors import LoraforgeError

    if name not in _REGISTRY:
        raise LoraforgeError(f"unknown backend {name!r}", f"choose one of: {', '.join(names())}")
    module_name, _, attr = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)()


def warm_spec(name: str, env: BackendEnv) -> Warm | None:
    """``get(name).warm(env)``, without importing the backend: None for an unknown backend or nothing to warm."""
    if name not in _WARM:
        return None
    module_name, _, attr = _WARM[name].partition(":")
    spec: Warm | None = getattr(importlib.import_module(module_name), attr)(env)
    return spec
