"""One training run, start to finish: preflight, run folder, render, launch, parse, collect.

The data flows one way: JobSpec -> backend.render -> backend.command -> launch -> backend.parser -> events ->
(events.jsonl, display, run.json) -> backend.collect -> the final LoRA in ``output/``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from backends import base
from backends.base import Artifacts, Backend, Resume
from orchestrator.envs import BackendEnv, get_env
from orchestrator.errors import BackendNotReady, LoraforgeError
from orchestrator.events import Checkpoint, Event, EventLog, Failure, Finished, Log, Phase, Progress
from orchestrator.job import JobSpec
from orchestrator.launch import Child, run_process
from orchestrator.overfit import OverfitWatch
from orchestrator.runs import RunDir, create_run
from orchestrator.watch import RunWatcher

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}

EventHandler = Callable[[Event], None]


class EventSink:
    """Fans events out to events.jsonl, the display and run.json. Thread-safe: webhooks arrive on other threads."""

    def __init__(self, run: RunDir, handlers: list[EventHandler]) -> None:
        self.run = run
        self.log = EventLog(run.events_file)
        self.handlers = handlers
        self.lock = threading.Lock()
        self.last_progress: Progress | None = None
        self.failure: Failure | None = None
        self.checkpoints: list[Checkpoint] = []
        self.overfit = OverfitWatch()

    def emit(self, event: Event) -> None:
        with self.lock:
            self._write(event)
            warning = self.overfit.see(event)
            if warning is not None:
                self._write(warning)

    def _write(self, event: Event) -> None:
        self.log.write(event)
        if isinstance(event, Progress):
            self.last_progress = event
        elif isinstance(event, Failure):
            self.failure = event
        elif isinstance(event, Checkpoint):
            self.checkpoints.append(event)
        for handler in self.handlers:
            handler(event)

    def close(self) -> None:
        self.log.close()


@dataclass
class RunOutcome:
    run: RunDir
    returncode: int
    lora: Path | None
    failure: Failure | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.lora is not None


# --- preflight ------------------------------------------------------------------------------------------------


def looks_like_path(text: str) -> bool:
    """A local path (which must exist) rather than a hub id like ``org/name``."""
    if text.startswith(("/", "./", "../", "~", "\\")) or Path(text).exists():
        return True
    return Path(text).suffix.lower() in (".safetensors", ".ckpt", ".pt", ".bin", ".pth")


def preflight(job: JobSpec, backend: Backend) -> tuple[JobSpec, BackendEnv]:
    """Everything that can be checked before launching, with one clear message each. Returns the job with its
    family filled in, and the backend's environment."""
    dataset = Path(job.dataset).expanduser()
    if not dataset.is_dir():
        raise LoraforgeError(
            f"dataset folder {dataset} does not exist",
            "pass the folder of prepared images (or a photo folder to `loraforge train PHOTOS ...`)",
        )
    images = [p for p in dataset.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise LoraforgeError(
            f"dataset folder {dataset} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})",
            f"put your photos there, or prepare them with `loraforge prep PHOTOS -o {dataset}`",
        )
    if looks_like_path(job.base_model) and not Path(job.base_model).expanduser().exists():
        raise LoraforgeError(
            f"base model {job.base_model} does not exist",
            "pass a local .safetensors file, a diffusers folder, or a hub id such as stabilityai/stable-diffusion-xl-base-1.0",
        )
    if job.family is None:
        from orchestrator.basemodel import infer_family

        family = infer_family(job.base_model)
        if family is None:
            raise LoraforgeError(
                f"cannot tell the model family of {job.base_model}",
                "set it: family: sd15 | sdxl | flux (or --family)",
            )
        job = job.model_copy(update={"family": family})
    if job.family not in backend.families:
        others = [n for n in base.names() if n != backend.name and job.family in base.get(n).families]
        raise LoraforgeError(
            f"the {backend.name} backend cannot train {job.family} models",
            f"use --backend {others[0]}" if others else f"{backend.name} trains: {', '.join(sorted(backend.families))}",
        )
    env = get_env(backend.name)
    problems = backend.check(env)
    if problems:
        first = problems[0]
        raise BackendNotReady(f"{backend.name}: {first.message}", first.fix)
    return job, env


# --- the run --------------------------------------------------------------------------------------------------


def run_training(
    job: JobSpec,
    backend_name: str,
    *,
    handlers: list[EventHandler] | None = None,
    run: RunDir | None = None,
    resume: Resume | None = None,
    on_start: Callable[[Child], None] | None = None,
    extra_env: dict[str, str] | None = None,
) -> RunOutcome:
    """Train ``job`` with ``backend_name``. A new run folder unless ``run`` is given (resume continues in it).
    ``extra_env`` is added to the child's environment (compare pins each arm to its GPU this way)."""
    backend = base.get(backend_name)
    job, env = preflight(job, backend)
    from orchestrator.steps import apply_step_plan, image_sizes

    job, plan = apply_step_plan(job, image_sizes(Path(job.dataset), IMAGE_SUFFIXES), backend_name)
    if run is None:
        run = create_run(job, backend_name)
    sink = EventSink(run, list(handlers or []))
    sink.emit(Log("info", plan.text()))
    start = time.monotonic()
    try:
        return _run(job, backend, env, run, sink, resume, on_start, start, extra_env)
    finally:
        sink.close()


def _run(
    job: JobSpec,
    backend: Backend,
    env: BackendEnv,
    run: RunDir,
    sink: EventSink,
    resume: Resume | None,
    on_start: Callable[[Child], None] | None,
    start: float,
    extra_env: dict[str, str] | None = None,
) -> RunOutcome:
    sink.emit(Phase("setup"))
    with _live_channel(backend, sink.emit):
        rendered = backend.render(job, run.rendered, resume=resume)
        for note in rendered.notes:
            sink.emit(Log("warning", note))
        launch = backend.command(job, rendered, env)
        (run.rendered / "command.txt").write_text(_shell_line(launch.argv, launch.cwd), encoding="utf-8")
        run.update_state(status="running", backend_python=str(env.python), resumed_from=resume.step if resume else None)
        parser = backend.parser()
        watcher = RunWatcher(backend.watched(job, run.path), job.sampling.prompts)

        def on_output(stream: str, data: bytes) -> None:
            for event in parser.feed(data, stream):
                sink.emit(event)
            for event in watcher.poll():
                sink.emit(event)

        child_env = {**launch.env, **extra_env} if extra_env else launch.env
        result = run_process(
            launch.argv, env=child_env, cwd=launch.cwd, log_dir=run.logs, on_output=on_output, on_start=on_start
        )
        for event in [*watcher.poll(force=True), *parser.finish(result.returncode)]:
            sink.emit(event)

    lora: Path | None = None
    if result.returncode == 0:
        artifacts = backend.collect(job, run.path)
        lora = _finalize(job, backend, env, run, artifacts, sink)
        if lora is None and not result.interrupted:  # a trainer that stops cleanly on Ctrl-C also exits 0
            sink.emit(Failure("other", f"{backend.name} exited 0 but wrote no LoRA file", None, [], str(run.logs)))
    if lora is None and sink.failure is None and (result.interrupted or result.returncode != 0):
        kind = "interrupted" if result.interrupted else "other"
        message = (
            "stopped by the user" if result.interrupted else f"{backend.name} exited with code {result.returncode}"
        )
        sink.emit(
            Failure(kind, message, "see the log; resume with `loraforge resume RUN`", [], str(run.logs / "stderr.log"))
        )

    seconds = time.monotonic() - start
    if lora is not None:
        sink.emit(Finished(str(lora), seconds))
        status = "finished"
    else:
        status = "interrupted" if result.interrupted else "failed"
    last = sink.last_progress
    run.update_state(
        status=status,
        returncode=result.returncode,
        step=last.step if last else None,
        total=last.total if last else None,
        seconds=round(seconds, 2),
        lora=str(lora) if lora else None,
    )
    return RunOutcome(run, result.returncode, lora, sink.failure, seconds)


@contextlib.contextmanager
def _live_channel(backend: Backend, emit: EventHandler) -> Iterator[None]:
    """Backends with a structured side channel (SimpleTuner's webhooks) open it for the duration of the run."""
    opener = getattr(backend, "open_channel", None)
    if opener is None:
        yield
        return
    with opener(emit):
        yield


def _finalize(
    job: JobSpec, backend: Backend, env: BackendEnv, run: RunDir, artifacts: Artifacts, sink: EventSink
) -> Path | None:
    """Put the final LoRA at output/<name>.safetensors (atomically), in the asked format, with loraforge metadata."""
    if artifacts.lora is None or not artifacts.lora.exists():
        return None
    sink.emit(Phase("saving"))
    target = run.output / f"{job.lora_name}.safetensors"
    from orchestrator.lora.finalize import finalize_lora

    return finalize_lora(job, backend.name, env, artifacts.lora, target)


def _shell_line(argv: list[str], cwd: Path) -> str:
    import shlex

    return f"cd {shlex.quote(str(cwd))} && {shlex.join(argv)}\n"
