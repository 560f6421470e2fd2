"""One training run, start to finish: preflight, run folder, render, launch, parse, collect.

The data flows one way::

    JobSpec + dataset folder --preflight--> Ready (job with family and steps, env, Dataset, StepPlan)
    Ready --backend.render--> Rendered --backend.command--> Launch --launch--> bytes (and webhook payloads)
    --backend.parser--> events --EventSink--> events.jsonl, display, run.json
    child exits --backend.collect--> Artifacts --finalize--> output/<name>.safetensors
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from backends.base import Artifacts, Backend, Endpoint, LogParser, Rendered, Resume
from orchestrator.errors import LoraforgeError
from orchestrator.events import PHASES, Checkpoint, Event, EventLog, Failure, Finished, Log, Phase, Progress
from orchestrator.job import JobSpec
from orchestrator.launch import Child, run_process
from orchestrator.overfit import OverfitWatch
from orchestrator.preflight import Ready, preflight
from orchestrator.reuse import harvest, seed
from orchestrator.runs import RunDir, create_run, disk_failure, launcher_identity
from orchestrator.speed.check import SpeedCheck
from orchestrator.speed.check import for_run as speed_check_for_run
from orchestrator.warm import WarmStart
from orchestrator.watch import RunWatcher

EventHandler = Callable[[Event], None]


class EventSink:
    """Fans events out to events.jsonl, the display and run.json, keeping the stream's promises whatever the
    sources do: phases only move forward (each appears once, ``done`` last) and each step is reported once.
    Thread-safe: webhooks arrive on another thread."""

    def __init__(self, run: RunDir, handlers: list[EventHandler]) -> None:
        self.run = run
        self.log = EventLog(run.events_file)
        self.handlers = handlers
        self.lock = threading.Lock()
        self.last_progress: Progress | None = None
        self.phase = -1
        self.failure: Failure | None = None
        self.checkpoints: list[Checkpoint] = []
        self.overfit = OverfitWatch()
        self.speed = SpeedCheck(None)  # run_training sets the run's own once the job and environment are known

    def emit(self, event: Event) -> None:
        with self.lock:
            if isinstance(event, Phase):
                index = PHASES.index(event.name) if event.name in PHASES else self.phase
                if index <= self.phase:
                    return
                self.phase = index
            elif isinstance(event, Progress):
                if self.last_progress is not None and event.step <= self.last_progress.step:
                    return
                self.last_progress = event
            elif isinstance(event, Failure):
                self.failure = event
            elif isinstance(event, Checkpoint):
                self.checkpoints.append(event)
            self._write(event)
            warning = self.overfit.see(event)
            if warning is not None:
                self._write(warning)
            for slow in self.speed.see(event):
                self._write(slow)

    def _write(self, event: Event) -> None:
        self.log.write(event)
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
    warm: WarmStart | None = None,
) -> RunOutcome:
    """Train ``job`` with ``backend_name``. A new run folder unless ``run`` is given (resume continues in it).
    ``extra_env`` is added to the child's environment (compare pins each arm to its GPU this way). ``warm``: the
    backend's interpreter started earlier (orchestrator/warm.py); released to this run, or let go if not used."""
    try:
        return _train(job, backend_name, handlers, run, resume, on_start, extra_env, warm)
    finally:
        if warm is not None:
            warm.discard()


def _train(
    job: JobSpec,
    backend_name: str,
    handlers: list[EventHandler] | None,
    run: RunDir | None,
    resume: Resume | None,
    on_start: Callable[[Child], None] | None,
    extra_env: dict[str, str] | None,
    warm: WarmStart | None,
) -> RunOutcome:
    ready = preflight(job, backend_name)
    created = run is None
    if run is None:
        run = create_run(ready.job, backend_name)
    sink = EventSink(run, list(handlers or []))
    sink.speed = speed_check_for_run(ready.job, backend_name, ready.env, {**os.environ, **(extra_env or {})})
    sink.emit(Log("info", ready.plan.text()))
    for note in ready.notes:
        sink.emit(Log("warning", note))
    start = time.monotonic()
    try:
        return _run(ready, run, sink, resume, on_start, start, extra_env or {}, warm)
    except _NotStarted as refused:
        sink.close()
        if created:  # the backend refused the job while rendering: nothing ran, and the folder is only ours
            shutil.rmtree(run.path, ignore_errors=True)
        raise refused.error from None
    finally:
        sink.close()


class _NotStarted(Exception):
    """The backend refused the job before anything was launched (a missing model part, an unknown option)."""

    def __init__(self, error: LoraforgeError) -> None:
        super().__init__(str(error))
        self.error = error


class _Parsing:
    """The run's parser between its two inputs: output bytes (the launcher's thread) and webhook payloads (the
    receiver's thread), parsed one at a time, events to the sink."""

    def __init__(self, sink: EventSink, run: RunDir) -> None:
        self.sink = sink
        self.run = run
        self.parser: LogParser | None = None
        self.lock = threading.Lock()

    def output(self, stream: str, data: bytes) -> None:
        with self.lock:
            events = self.parser.feed(data, stream) if self.parser else []
        for event in events:
            self.sink.emit(event)

    def payload(self, message: dict[str, object]) -> None:
        with self.lock:
            events = self.parser.payload(message) if self.parser else []
        for event in events:
            self.sink.emit(event)

    def finish(self, returncode: int) -> None:
        with self.lock:
            events = self.parser.finish(returncode) if self.parser else []
        for event in events:
            self.sink.emit(_placed(event, self.run) if isinstance(event, Failure) else event)


def _placed(failure: Failure, run: RunDir) -> Failure:
    """A trainer's failure with what only loraforge knows: the run's log, and for a full disk the run folder (the
    trainer's own message may name no file: `OSError: [Errno 28] No space left on device`)."""
    message = failure.message
    if failure.kind == "disk_full" and str(run.path) not in message:
        message = f"{message} (the run stopped there; what it saved before is kept in {run.path})"
    return replace(failure, message=message, log_path=failure.log_path or str(run.logs / "stderr.log"))


@contextmanager
def _webhooks(backend: Backend, parsing: _Parsing, emit: EventHandler) -> Iterator[Endpoint | None]:
    """The loopback receiver for a backend that posts webhooks, for the duration of the run; None when the backend
    posts none or the receiver cannot start (progress then comes from the trainer's output)."""
    if not backend.webhooks:
        yield None
        return
    from orchestrator.webhook import WebhookReceiver, webhook_port

    receiver = WebhookReceiver(parsing.payload, port=webhook_port())
    try:
        receiver.start()
    except LoraforgeError as exc:
        emit(Log("warning", f"{exc.message}; reading progress from {backend.label}'s output instead"))
        yield None
        return
    try:
        yield Endpoint(url=receiver.url, job_id=receiver.job_id, secret=receiver.secret)
    finally:
        receiver.stop()


def _run(
    ready: Ready,
    run: RunDir,
    sink: EventSink,
    resume: Resume | None,
    on_start: Callable[[Child], None] | None,
    start: float,
    extra_env: dict[str, str],
    warm: WarmStart | None,
) -> RunOutcome:
    job, backend, env = ready.job, ready.backend, ready.env
    sink.emit(Phase("setup"))
    parsing = _Parsing(sink, run)
    with _webhooks(backend, parsing, sink.emit) as endpoint:
        try:
            rendered = backend.render(job, ready.dataset, run, env, resume=resume, endpoint=endpoint)
            launch = backend.command(job, rendered, env)
        except LoraforgeError as exc:
            raise _NotStarted(exc) from None
        for note in rendered.notes:
            sink.emit(Log("warning", note))
        for reuse in rendered.reuse:
            if reused := seed(reuse):
                sink.emit(Log("info", f"reusing {reused} cached {reuse.what} from an earlier run"))
        (run.rendered / "command.txt").write_text(shell_line(launch.argv, launch.env, launch.cwd), encoding="utf-8")
        run.update_state(
            status="running",
            backend_python=str(env.python),
            resumed_from=resume.step if resume else None,
            launcher=launcher_identity(),  # `loraforge runs` tells a run whose launcher was killed from a live one
        )
        parsing.parser = backend.parser(rendered)
        watcher = RunWatcher(rendered.watched, job.sampling.prompts)

        numpy_loading = finishing_loaded = False

        def on_output(stream: str, data: bytes) -> None:
            nonlocal numpy_loading, finishing_loaded
            if not numpy_loading:
                # numpy, which finishing the LoRA needs (~0.1 s to import), loads while the trainer runs, not after
                # it has exited, and not beside the trainer's own start-up imports either (on 2 cores the two
                # contend): from its first output on. Only a library that imports none of ours, so no import here
                # can wait on this thread's
                numpy_loading = True
                threading.Thread(target=importlib.import_module, args=("numpy",), daemon=True).start()
            parsing.output(stream, data)
            if not finishing_loaded and sink.last_progress is not None:
                # the rest of what finishing the LoRA imports (~20 ms), here once training runs (numpy has loaded by
                # then): time a run's end would otherwise add after the trainer's exit
                finishing_loaded = True
                importlib.import_module("orchestrator.lora.finalize")
            for event in watcher.poll():
                sink.emit(event)

        child_env = child_environment(launch.env, extra_env, loopback=endpoint is not None)
        started = warm.release(launch, child_env) if warm is not None else None
        result = run_process(
            launch.argv,
            env=child_env,
            cwd=launch.cwd,
            log_dir=run.logs,
            on_output=on_output,
            on_start=on_start,
            process=started,
        )
        for event in watcher.poll(force=True):
            sink.emit(event)
        parsing.finish(result.returncode)
        if result.log_error is not None:  # the logs could not be written (disk full...): the trainer was stopped
            sink.emit(disk_failure(result.log_error, run))

    lora: Path | None = None
    if result.returncode == 0 and result.log_error is None:  # a trainer stopped for a failed disk made no LoRA
        artifacts = backend.collect(job, run)
        lora = _finalize(ready, run, artifacts, sink)
        if lora is None and not result.interrupted:  # a trainer that stops cleanly on Ctrl-C also exits 0
            sink.emit(Failure("other", f"{backend.label} exited 0 but wrote no LoRA file", None, [], str(run.logs)))
    if lora is None and sink.failure is None and (result.interrupted or result.returncode != 0):
        kind = "interrupted" if result.interrupted else "other"
        message = "stopped by the user" if result.interrupted else f"{backend.label} exited with code {result.returncode}"
        sink.emit(
            Failure(kind, message, "see the log; resume with `loraforge resume RUN`", [], str(run.logs / "stderr.log"))
        )

    seconds = time.monotonic() - start
    if lora is not None:
        for reuse in rendered.reuse:  # complete files only: a run that finished wrote each one whole
            with contextlib.suppress(OSError):  # a full cache disk costs the next run time, never this run's LoRA
                harvest(reuse)
        sink.emit(Phase("done"))
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


def child_environment(settings: dict[str, str], extra: dict[str, str], *, loopback: bool) -> dict[str, str]:
    """The trainer's environment: ours, the backend's settings, then the caller's (compare's GPU pinning). With a
    loopback receiver, 127.0.0.1 bypasses any proxy the user has set (requests honours HTTP(S)_PROXY)."""
    env = {**os.environ, **settings, **extra}
    if loopback:
        for key in ("NO_PROXY", "no_proxy"):
            hosts = [h for h in env.get(key, "").split(",") if h]
            env[key] = ",".join(dict.fromkeys([*hosts, "127.0.0.1", "localhost"]))
    return env


def _finalize(ready: Ready, run: RunDir, artifacts: Artifacts, sink: EventSink) -> Path | None:
    """Put the final LoRA at output/<name>.safetensors (atomically), in the asked format, with loraforge metadata."""
    if artifacts.lora is None or not artifacts.lora.exists():
        return None
    sink.emit(Phase("saving"))
    target = run.output / f"{ready.job.lora_name}.safetensors"
    from orchestrator.lora.finalize import finalize_lora, loraforge_metadata

    metadata = loraforge_metadata(ready.job, ready.backend.name, ready.env, ready.dataset, ready.plan)
    try:
        return finalize_lora(ready.job, artifacts.lora, target, metadata)
    except OSError as exc:  # a full or read-only disk: the trainer's own file stays where it is, the run says why
        sink.emit(disk_failure(exc, run))
        return None


def shell_line(argv: list[str], settings: dict[str, str], cwd: Path) -> str:
    """The command as one shell line that runs as it is: ``cd CWD && env K=V ... ARGV``."""
    import shlex

    assignments = [f"{key}={value}" for key, value in settings.items()]
    command = ["env", *assignments, *argv] if assignments else argv
    return f"cd {shlex.quote(str(cwd))} && {shlex.join(command)}\n"


def render_only(job: JobSpec, backend_name: str, out: Path) -> tuple[Rendered, str]:
    """What `loraforge render` shows: the job checked like a run (dataset, trigger, family), the backend's files
    written into ``out`` laid out like a run folder, and the command line. Works without the backend set up (its
    settings are previewed for this machine's device)."""
    ready = preflight(job, backend_name, need_env=False)
    run = RunDir(out.resolve())
    for folder in (run.path, run.rendered, run.logs, run.output):
        folder.mkdir(parents=True, exist_ok=True)
    rendered = ready.backend.render(ready.job, ready.dataset, run, ready.env)  # no receiver: nothing listens
    launch = ready.backend.command(ready.job, rendered, ready.env)
    rendered.notes[:0] = list(ready.notes)
    return rendered, shell_line(launch.argv, launch.env, launch.cwd)
