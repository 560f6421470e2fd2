"""Train the arms: one after the other, or side by side with one GPU each when several GPUs are visible.

Each arm runs through the ordinary :func:`orchestrator.training.run_training`, so its run folder is a normal run
folder. Measured around it and written to the run folder's ``metrics.json``: wall time, time to the first step,
steps per second over the training steps, peak RAM of the process tree and peak GPU memory. An arm that cannot
start (backend not set up, a family it cannot train) is *skipped* with the reason; one that fails is *failed*
with its failure message; the other arms still run.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.compare.arms import Arm
from orchestrator.compare.monitor import Peaks, TreeMonitor, visible_gpus
from orchestrator.compare.rundata import METRICS_FILE, ArmResult
from orchestrator.errors import LoraforgeError
from orchestrator.events import Event, Progress
from orchestrator.launch import Child
from orchestrator.warm import WarmStart, warm_for

ArmHandler = Callable[[Arm, Event], None]


@dataclass
class _Timing:
    """Step times seen by the event handler (it runs as events arrive, so these are real times)."""

    start: float
    first: tuple[float, int] | None = None
    last: tuple[float, int] | None = None
    children: list[Child] = field(default_factory=list)

    def on_event(self, event: Event) -> None:
        if isinstance(event, Progress) and event.step >= 1:
            now = time.monotonic()
            if self.first is None:
                self.first = (now, event.step)
            if self.last is None or event.step > self.last[1]:
                self.last = (now, event.step)

    def steps_per_s(self) -> float | None:
        if self.first is None or self.last is None or self.last[1] <= self.first[1]:
            return None
        seconds = self.last[0] - self.first[0]
        return (self.last[1] - self.first[1]) / seconds if seconds > 0 else None


def run_arms(
    arms: list[Arm],
    *,
    on_event: ArmHandler | None = None,
    on_arm_done: Callable[[ArmResult], None] | None = None,
    gpus: list[str] | None = None,
    samples: bool = True,
) -> list[ArmResult]:
    """Run every arm and return their results in the arms' order. Several GPUs: one arm per GPU at a time.

    Ctrl-C stops the running arms (they end as *interrupted*, keeping their run folders) and runs no further
    arm (those end as *skipped*), so the report is still written."""
    gpus = visible_gpus() if gpus is None else gpus
    if any(arm.job.distributed.gpus * arm.job.distributed.nodes > 1 for arm in arms):
        gpus = []  # an arm that spans several GPUs needs them all: one arm at a time, none pinned
    results: dict[int, ArmResult] = {}
    live: dict[int, Child] = {}
    stop = threading.Event()

    def run_one(
        index: int, gpu: str | None, warm: WarmStart | None = None, then: Callable[[], None] | None = None
    ) -> None:
        arm = arms[index]

        def started(child: Child) -> None:
            live[index] = child
            if then is not None:
                then()

        if stop.is_set():
            result = ArmResult(arm.label, arm.backend, "skipped", "not run: the comparison was interrupted")
            if warm is not None:
                warm.discard()
        else:
            result = run_arm(arm, gpu=gpu, on_event=on_event, on_start=started, warm=warm)
            live.pop(index, None)
            if result.status == "interrupted":
                stop.set()
        results[index] = result
        if on_arm_done is not None:
            on_arm_done(result)

    if len(gpus) < 2 or len(arms) < 2:
        # One arm at a time: while one trains, the next arm's trainer already imports its libraries (a warm start)
        upcoming: list[WarmStart | None] = [None]
        for index in range(len(arms)):
            warm, upcoming[0] = upcoming[0], None

            def warm_next(index: int = index) -> None:
                if index + 1 < len(arms) and not stop.is_set():
                    upcoming[0] = warm_for(arms[index + 1].backend)

            run_one(index, gpus[0] if gpus else None, warm, warm_next)  # Ctrl-C reaches the child via run_training
        if upcoming[0] is not None:
            upcoming[0].discard()
        return [results[i] for i in range(len(arms))]

    free: queue.Queue[str] = queue.Queue()
    for gpu in gpus:
        free.put(gpu)

    def on_gpu(index: int) -> None:
        gpu = free.get()
        try:
            run_one(index, gpu)
        finally:
            free.put(gpu)

    with ThreadPoolExecutor(max_workers=len(gpus), thread_name_prefix="arm") as pool:
        futures = [pool.submit(on_gpu, i) for i in range(len(arms))]
        try:
            for future in futures:
                future.result()
        except KeyboardInterrupt:
            stop.set()
            for child in list(live.values()):  # arms on worker threads do not get the terminal's signal
                child.stop()
            for future in futures:
                future.result()
    return [results[i] for i in range(len(arms))]


def run_arm(
    arm: Arm,
    *,
    gpu: str | None = None,
    on_event: ArmHandler | None = None,
    on_start: Callable[[Child], None] | None = None,
    samples: bool = True,
    warm: WarmStart | None = None,
) -> ArmResult:
    """Train one arm, measure it, write its metrics.json (and samples); never raises for the arm's own failure."""
    from orchestrator.training import run_training

    timing = _Timing(time.monotonic())
    monitors: list[TreeMonitor] = []

    def started(child: Child) -> None:
        monitors.append(TreeMonitor(child.pid, gpu))
        if on_start is not None:
            on_start(child)

    handlers = [timing.on_event]
    if on_event is not None:
        handlers.append(lambda event: on_event(arm, event))
    try:
        outcome = run_training(
            arm.job,
            arm.backend,
            handlers=handlers,
            on_start=started,
            extra_env={"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else None,
            warm=warm,
        )
    except LoraforgeError as exc:
        reason = exc.message + (f" (fix: {exc.hint})" if exc.hint else "")
        return ArmResult(arm.label, arm.backend, "skipped", reason, None, arm.varied)
    except ImportError as exc:  # the backend's module is not part of this install
        return ArmResult(arm.label, arm.backend, "skipped", f"backend not available: {exc}", None, arm.varied)
    except Exception as exc:  # noqa: BLE001 - one arm's crash must not lose the others
        return ArmResult(arm.label, arm.backend, "failed", f"{type(exc).__name__}: {exc}", None, arm.varied)
    wall = time.monotonic() - timing.start
    peaks = monitors[0].stop() if monitors else Peaks()

    # run.json knows whether the user stopped it (a backend may exit 0 on SIGINT, without a LoRA).
    stopped = outcome.run.state().get("status") == "interrupted"
    status = "finished" if outcome.ok else "interrupted" if stopped else "failed"
    reason = None
    if stopped:
        reason = "interrupted: stopped by the user"
    elif outcome.failure is not None:
        reason = f"{outcome.failure.kind}: {outcome.failure.message}"
    elif not outcome.ok:
        reason = f"{arm.backend} exited with code {outcome.returncode}"
    metrics = {
        "label": arm.label,
        "backend": arm.backend,
        "varied": arm.varied,
        "gpu": gpu,
        "wall_s": round(wall, 3),
        "first_step_s": round(timing.first[0] - timing.start, 3) if timing.first else None,
        "steps_per_s": timing.steps_per_s(),
        "peak_ram_bytes": peaks.ram_bytes,
        "peak_gpu_bytes": peaks.gpu_bytes,
    }
    run_dir = outcome.run.path
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    if outcome.ok and outcome.lora is not None and samples:
        from orchestrator.compare.samples import make_samples

        make_samples(arm.job, outcome.lora, run_dir)
    return ArmResult(arm.label, arm.backend, status, reason, run_dir, arm.varied)


def lock_handler(handler: ArmHandler) -> ArmHandler:
    """Arms side by side call the display from several threads: serialise them."""
    lock = threading.Lock()

    def locked(arm: Arm, event: Event) -> None:
        with lock:
            handler(arm, event)

    return locked


def write_arms_file(results: list[ArmResult], out_dir: Path) -> Path:
    """arms.json in the comparison folder: every arm with its status and run folder, for `build_report` later."""
    path = out_dir / "arms.json"
    rows = [
        {
            "label": r.label,
            "backend": r.backend,
            "status": r.status,
            "reason": r.reason,
            "run_dir": str(r.run_dir) if r.run_dir else None,
            "varied": r.varied,
        }
        for r in results
    ]
    path.write_text(json.dumps(rows, indent=2, default=str), encoding="utf-8")
    return path
