"""Step planning: how many optimizer steps a backend will really run, computed before it starts.

Backends count steps per aspect bucket: images of similar shape are batched together, so a dataset of 10 images
with batch size 4 in two buckets of 5 runs 2 + 2 = 4 batches per epoch, not ceil(10 / 4) = 3. loraforge computes
the count the backend will reach and passes it explicitly (``max_train_steps``), so no hidden default decides.

- sd-scripts (train_network.py): batches per epoch = sum over buckets of ceil(images x repeats / batch) (partial
  batches are kept); optimizer steps per epoch = ceil(batches / num_processes / gradient_accumulation).
- SimpleTuner (MultiAspectSampler): a bucket yields only full batches (an incomplete last batch of a bucket is
  skipped), and steps per epoch = ceil(batches / gradient_accumulation / num_processes).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.job import JobSpec

BUCKET_STEP = 64


def bucket_for(width: int, height: int, resolution: int, step: int = BUCKET_STEP) -> tuple[int, int]:
    """The training bucket of an image: same aspect ratio (to one step), area at most resolution^2."""
    area = resolution * resolution
    aspect = width / height
    bucket_w = max(step, int(math.sqrt(area * aspect)) // step * step)
    bucket_h = max(step, int(area / bucket_w) // step * step)
    return bucket_w, bucket_h


@dataclass(frozen=True)
class StepPlan:
    backend: str
    images: int
    buckets: dict[tuple[int, int], int]
    repeats: int
    batch_size: int
    gradient_accumulation: int
    processes: int
    batches_per_epoch: int
    steps_per_epoch: int
    epochs: float
    total_steps: int
    held_out: int = 0

    def text(self) -> str:
        buckets = ", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(self.buckets.items()))
        held = f" ({self.held_out} more held out for validation)" if self.held_out else ""
        return (
            f"step plan ({self.backend}): {self.images} images{held} in {len(self.buckets)} bucket(s) [{buckets}], "
            f"repeats {self.repeats}, batch {self.batch_size}, gradient accumulation {self.gradient_accumulation}, "
            f"{self.processes} process(es) -> {self.batches_per_epoch} batches = {self.steps_per_epoch} steps per epoch; "
            f"{self.total_steps} steps = {self.epochs:g} epochs"
        )


def batches_per_epoch(buckets: dict[tuple[int, int], int], repeats: int, batch: int, backend: str) -> int:
    if backend == "simpletuner":
        return sum(n * repeats // batch for n in buckets.values())
    return sum(math.ceil(n * repeats / batch) for n in buckets.values())


def plan_steps(
    sizes: Iterable[tuple[int, int]],
    *,
    backend: str,
    resolution: int,
    repeats: int = 1,
    batch_size: int = 1,
    gradient_accumulation: int = 1,
    processes: int = 1,
    epochs: int | None = None,
    steps: int | None = None,
) -> StepPlan:
    sizes = list(sizes)
    buckets = dict(Counter(bucket_for(w, h, resolution) for w, h in sizes))
    batches = batches_per_epoch(buckets, repeats, batch_size, backend)
    per_epoch = max(1, math.ceil(batches / processes / gradient_accumulation)) if batches else 0
    if steps is None:
        if epochs is None:
            raise ValueError("give steps or epochs")
        steps = epochs * per_epoch
    return StepPlan(
        backend=backend,
        images=len(sizes),
        buckets=buckets,
        repeats=repeats,
        batch_size=batch_size,
        gradient_accumulation=gradient_accumulation,
        processes=processes,
        batches_per_epoch=batches,
        steps_per_epoch=per_epoch,
        epochs=round(steps / per_epoch, 2) if per_epoch else 0.0,
        total_steps=steps,
    )


def image_sizes(dataset: Path, suffixes: set[str]) -> list[tuple[int, int]]:
    """Width and height of every image, from the file headers only (fast: nothing is decoded)."""
    from PIL import Image

    sizes = []
    for path in sorted(dataset.rglob("*")):
        if path.suffix.lower() in suffixes:
            try:
                with Image.open(path) as image:
                    sizes.append(image.size)
            except OSError:
                continue  # unreadable files are prep's business; the backend will skip them too
    return sizes


def validation_interval(job: JobSpec) -> int:
    """Steps between validation-loss measurements: at every checkpoint (so `runs show` pairs them), else ten times
    a run. Both backends use it."""
    return job.saving.every_n_steps or max(1, (job.training.steps or 100) // 10)


def held_out_count(images: int, share: float, backend: str) -> int:
    """How many images the backend keeps out of training for validation loss (each rounds its own way)."""
    if not share or not images:
        return 0
    if backend == "kohya":  # sd-scripts trains on the first ceil(n * (1 - share)) of a seeded shuffle
        return images - math.ceil(images * (1 - share))
    return min(images - 1, max(1, round(images * share))) if images > 1 else 0  # SimpleTuner: loraforge's own draw


def apply_step_plan(job: JobSpec, sizes: list[tuple[int, int]], backend: str) -> tuple[JobSpec, StepPlan]:
    """The job with an explicit step count (epochs converted), and the plan that explains it."""
    training = job.training
    held = held_out_count(len(sizes), training.validation_split, backend)
    # Which images are held out is the backend's own seeded draw: with several buckets the split between them is
    # approximate (the tail of the sorted list stands in for the held-out ones); the count is exact.
    plan = plan_steps(
        sizes[: len(sizes) - held],
        backend=backend,
        resolution=training.resolution,
        repeats=training.repeats,
        batch_size=training.batch_size,
        gradient_accumulation=training.gradient_accumulation,
        processes=job.distributed.gpus * job.distributed.nodes,
        epochs=training.epochs,
        steps=training.steps,
    )
    plan = dataclasses.replace(plan, held_out=held)
    if training.steps is None:
        if plan.total_steps == 0:
            from orchestrator.errors import LoraforgeError

            raise LoraforgeError(
                f"{backend} would train 0 steps: no aspect bucket holds a full batch of {training.batch_size}",
                "lower training.batch_size, add images, or give training.steps",
            )
        job = job.model_copy(
            update={"training": training.model_copy(update={"steps": plan.total_steps, "epochs": None})}
        )
    return job, plan
