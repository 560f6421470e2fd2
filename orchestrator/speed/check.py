"""Warn, once, when a run trains more than twice as slowly as the table says its card should.

The run's EventSink feeds every event to :meth:`SpeedCheck.see`. A step's time is the wall time between two
Progress events divided by the steps between them, measured here rather than read from the events' ``it_per_s``:
sd-scripts' bar reports the average since it started (tqdm ``smoothing=0``, start-up included), SimpleTuner's bar an
exponential average and its webhooks the last step. The wall time is the same measure for both, and it includes
what the user waits for (data loading, syncs). The first steps are skipped (compilation, caches, allocator warm-up);
then the median of the last WINDOW steps is compared with the expected figure (:mod:`orchestrator.speed.table`).

The warning names the figure and its source, then the likely causes, most likely first; the ones nvidia-smi can
check in a second (memory nearly full, other processes on the card, clock throttling, a card waiting for data) are
checked when the warning is written, and what was found is said. On CPU, or where the card or the family has no
comparable figure, nothing is asked and nothing is said.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from orchestrator.events import Event, Log, Progress
from orchestrator.speed import nvsmi
from orchestrator.speed.table import Expected, RunShape, expected_for, figures

THRESHOLD = 2.0
WARMUP_STEPS = 10
WINDOW = 20
MIN_SAMPLES = 10
NEAR_FULL = 0.95  # of the card's memory: where Windows' driver starts spilling into shared system memory
BUSY = 60  # percent utilisation below which the card is mostly waiting
OFFLOAD_TABLE = Path(__file__).resolve().parent / "offload.tsv"


@dataclass(frozen=True)
class Findings:
    """What the machine showed when the warning was written; None where it could not be asked."""

    gpu: nvsmi.Gpu | None = None
    apps: list[nvsmi.App] | None = None
    own_pids: frozenset[int] = frozenset()


Probe = Callable[[int | None], Findings]


@dataclass
class SpeedCheck:
    """Watches one run. ``expected`` None: never warns (CPU, an unknown card or family, nothing close enough)."""

    expected: Expected | None
    run: RunShape | None = None
    gpu_index: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # backend_args of the run's backend
    cache_latents: bool = True
    probe: Probe = field(default=lambda index: probe_machine(index))
    clock: Callable[[], float] = time.monotonic
    warmup: int = WARMUP_STEPS
    window: int = WINDOW
    min_samples: int = MIN_SAMPLES
    samples: list[float] = field(default_factory=list)
    first_step: int | None = None
    last: tuple[int, float] | None = None  # (step, clock) of the newest Progress
    done: bool = False

    def see(self, event: Event) -> list[Event]:
        if self.done or self.expected is None or self.run is None or not isinstance(event, Progress):
            return []
        now = self.clock()
        if self.last is not None and event.step <= self.last[0]:
            return []  # a repeated reading of a step already timed
        if self.first_step is None:
            self.first_step = event.step
        if self.last is not None and event.step > self.first_step + self.warmup:
            self.samples.append((now - self.last[1]) / (event.step - self.last[0]))
        self.last = (event.step, now)
        if len(self.samples) < self.min_samples:
            return []
        seconds = statistics.median(self.samples[-self.window :])
        if seconds <= THRESHOLD * self.expected.seconds:
            return []
        self.done = True
        return [Log("warning", self.message(seconds, self.expected, self.run, self.probe(self.gpu_index)))]

    def message(self, seconds: float, expected: Expected, run: RunShape, found: Findings) -> str:
        counted = min(len(self.samples), self.window)
        figure = expected.figure
        head = (
            f"training runs at {seconds:.2f} s/step (median of the last {counted} steps), "
            f"{seconds / expected.seconds:.1f}x the expected {expected.seconds:.2f} s/step"
        )
        if expected.scaling:
            head += f", scaled from {figure.seconds:g} s/step ({expected.scaling})"
        head += f"; figure: {figure.describe()}"
        if expected.figure.backend != run.backend:
            head += f" [a {expected.figure.backend} figure: none for {run.backend} on this card]"
        found_causes, open_causes, ruled_out = [], [], []
        for text, status in causes(run, found, self.options, self.cache_latents):
            {"found": found_causes, "open": open_causes, "ruled out": ruled_out}[status].append(text)
        likely = [*found_causes, *open_causes]
        parts = [
            head + ". Likely causes, most likely first: " + "; ".join(f"({i}) {t}" for i, t in enumerate(likely, 1))
        ]
        if ruled_out:
            parts.append("Checked and not found: " + "; ".join(ruled_out))
        return ". ".join(parts) + "."


def causes(run: RunShape, found: Findings, options: Mapping[str, Any], cache_latents: bool) -> list[tuple[str, str]]:
    """Each likely cause, in the order of how often it is the one, with what was found: "found", "open" (could not be
    checked here) or "ruled out". Found causes lead the warning, ruled-out ones close it."""
    gpu = found.gpu
    out: list[tuple[str, str]] = []
    spilling = False

    # 1. memory: on Windows (WDDM) a full card spills into shared system memory instead of failing
    spill = "GPU memory spilling into shared system memory (Windows' sysmem fallback when VRAM is full)"
    if gpu is None or gpu.used_mib is None or not gpu.total_mib:
        out.append((spill, "open"))
    else:
        used = f"{gpu.used_mib / 1024:.1f} of {gpu.total_mib / 1024:.1f} GiB in use"
        spilling = gpu.used_mib >= NEAR_FULL * gpu.total_mib
        if spilling:
            wddm = ", WDDM driver" if gpu.driver_model == "WDDM" else ""
            fix = "lower training.batch_size or resolution" + (
                "" if run.checkpointing else ", or turn gradient checkpointing on"
            )
            out.append(
                (f"{spill}: found, {used}{wddm}; {fix} (NVIDIA control panel: CUDA sysmem fallback off)", "found")
            )
        else:
            out.append((f"memory spilling: {used}", "ruled out"))

    # 2. offload and quantisation asked for in backend_args
    set_options = offloading(run.backend, options)
    offload = "CPU offload or a quantised / offloaded model or text encoder"
    if set_options:
        out.append((f"{offload}: found, backend_args.{run.backend} sets {', '.join(set_options)}", "found"))
    else:
        out.append((f"{offload} (none set in backend_args.{run.backend}; check the backend's own defaults)", "open"))

    # 3. gradient checkpointing on a model that fits without it (moot when memory is already full)
    if run.checkpointing and not spilling:
        fits = fits_without_checkpointing(run, gpu)
        if fits is not None:
            out.append((f"gradient checkpointing on a model that fits without it: found, {fits}", "found"))
        else:
            out.append(
                ("gradient checkpointing (each step recomputes activations; turn it off if memory allows)", "open")
            )

    # 4. the data loader: a card that waits is mostly idle
    loader = "a data loader bound by a slow disk or too few workers"
    if not cache_latents:
        loader += " (latents are not cached: every step encodes its images with the VAE)"
    if gpu is not None and gpu.utilization is not None and gpu.utilization < BUSY:
        out.append((f"{loader}: the card was busy only {gpu.utilization}% of the time, so it waits", "found"))
    elif gpu is not None and gpu.utilization is not None:
        out.append((f"{loader}: the card was {gpu.utilization}% busy", "ruled out"))
    else:
        out.append((loader, "open"))

    # 5. another process computing on the same card
    others = other_processes(found)
    if others is None:
        out.append(("another process on the GPU", "open"))
    elif others:
        out.append((f"another process on the GPU: found, {others}", "found"))
    else:
        out.append(("other processes on the GPU: none", "ruled out"))

    # 6. clocks held down by power or temperature
    if gpu is None or gpu.throttle is None:
        out.append(("thermal or power throttling", "open"))
    elif gpu.slowing:
        out.append((f"thermal or power throttling: found, {', '.join(gpu.slowing)}", "found"))
    else:
        out.append(("throttling: none active", "ruled out"))
    return out


def other_processes(found: Findings) -> str | None:
    """The compute processes on the card that are not this run, in words; "" for none; None if unknown."""
    if found.apps is None:
        return None
    others = [a for a in found.apps if a.pid not in found.own_pids]
    if len(others) == len(found.apps) and others:
        # none of them is ours: nvidia-smi sees another pid namespace (a container); the trainer is one of them
        return f"{len(others) - 1} besides the trainer (process ids from another namespace)" if len(others) > 1 else ""
    return ", ".join(
        f"{a.name} (pid {a.pid}" + (f", {a.used_mib / 1024:.1f} GiB)" if a.used_mib is not None else ")")
        for a in others
    )


def fits_without_checkpointing(run: RunShape, gpu: nvsmi.Gpu | None) -> str | None:
    """Evidence from the table that this family trained without checkpointing in less memory than the card has."""
    if gpu is None or not gpu.total_mib:
        return None
    total = gpu.total_mib / 1024
    for f in figures():
        if f.family == run.family and not f.checkpointing and f.peak_gib and f.peak_gib * 1.25 <= total:
            return (
                f"{run.family} trained without it in {f.peak_gib:g} GiB at {f.width} px, batch {f.batch} "
                f"({f.source}) and this card has {total:.0f} GiB: training.gradient_checkpointing: false"
            )
    return None


@cache
def _offload_table() -> tuple[tuple[str, str, str, str], ...]:
    rows = []
    for line in OFFLOAD_TABLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith(("#", "backend\t")):
            backend, option, unless, effect = line.split("\t")
            rows.append((backend, option, unless, effect))
    return tuple(rows)


def offloading(backend: str, options: Mapping[str, Any]) -> list[str]:
    """The options in ``options`` (a run's backend_args for ``backend``) that offload or quantise, with their values."""
    hits = []
    for name, option, unless, effect in _offload_table():
        if name == backend and option in options:
            value = options[option]
            if str(value).lower() not in ("", "none", "null", unless.lower()):
                hits.append(f"{option}={value} ({effect})")
    return hits


def own_pids() -> frozenset[int]:
    """This process and every process under it (the trainer and its data-loader workers)."""
    try:
        import psutil
    except ImportError:  # the `report` extra is not installed: only this process is known to be ours
        return frozenset({os.getpid()})
    try:
        me = psutil.Process()
        return frozenset({me.pid, *(p.pid for p in me.children(recursive=True))})
    except psutil.Error:
        return frozenset({os.getpid()})


def probe_machine(index: int | None) -> Findings:
    gpus = nvsmi.query_gpus()
    gpu = next((g for g in gpus if g.index == index), None)
    return Findings(gpu=gpu, apps=nvsmi.query_apps(), own_pids=own_pids())


def shape_of(job: Any, backend: str) -> RunShape:
    """A JobSpec (with its family resolved) in the table's terms."""
    t = job.training
    return RunShape(
        family=job.family or "",
        backend=backend,
        resolution=t.resolution,
        batch=t.batch_size,
        accumulation=t.gradient_accumulation,
        checkpointing=t.gradient_checkpointing,
        precision=t.precision,
    )


def for_run(job: Any, backend: str, env: Any, environ: Mapping[str, str]) -> SpeedCheck:
    """The check for one run: on CUDA, nvidia-smi is asked once for the run's card (the first of its
    CUDA_VISIBLE_DEVICES, from ``environ``); on CPU nothing is asked and the check stays silent."""
    if env.cpu:
        return SpeedCheck(None)
    gpu = nvsmi.pick(nvsmi.query_gpus(), environ.get("CUDA_VISIBLE_DEVICES"))
    if gpu is None:
        return SpeedCheck(None)
    run = shape_of(job, backend)
    return SpeedCheck(
        expected_for(gpu.name, run),
        run=run,
        gpu_index=gpu.index,
        options=dict(job.backend_args.get(backend, {})),
        cache_latents=job.training.cache_latents,
    )
