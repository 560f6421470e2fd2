"""Sample images from each arm's LoRA: the same prompts and seeds for every arm, one prompt without the trigger.

The prompt without the trigger shows leakage: a LoRA that paints its subject into every image of the class has
learned the class, not the trigger.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.compare.rundata import SAMPLES_DIR, SAMPLES_INDEX
from orchestrator.job import JobSpec

_CLASS_PROMPTS = {"face": "a photo of a person", "object": "a photo of an object", "style": "a painting of a landscape"}


def sample_plan(job: JobSpec) -> list[tuple[str, bool]]:
    """(prompt, has trigger) pairs: the job's sampling prompts (or one built from the trigger), then one without."""
    trigger = (job.trigger or "").strip()
    prompts = list(job.sampling.prompts) or ([f"a photo of {trigger}"] if trigger else [])
    plan = [(p, bool(trigger) and trigger in p) for p in prompts]
    leak = _CLASS_PROMPTS[job.subject]
    if not plan or all(has_trigger for _, has_trigger in plan):
        plan.append((leak, False))  # no prompt without the trigger yet: add one
    return plan


def sample_seeds(job: JobSpec) -> list[int]:
    return [job.sampling.seed]


def make_samples(job: JobSpec, lora: Path, run_dir: Path, python: str | None = None) -> dict[str, Any]:
    """Generate the arm's samples into ``run_dir/samples`` and write their index; never raises for a missing
    sampler or a failed generation: the note says why there are no images."""
    out = run_dir / SAMPLES_DIR
    out.mkdir(parents=True, exist_ok=True)
    plan = sample_plan(job)
    seeds = sample_seeds(job)
    index: dict[str, Any] = {"images": [], "note": None}
    try:
        from orchestrator.lora.sample import generate
    except ImportError:
        index["note"] = "samples left out: the sampler (orchestrator.lora.sample) is not part of this install"
    else:
        try:
            # the job's sampling steps at the size the LoRA was trained at, not the sampler's 20 steps at 1024 px:
            # a comparison on a small, slow machine must not spend hours on its samples
            paths = generate(
                lora,
                job.base_model,
                [p for p, _ in plan],
                seeds,
                out,
                python=python,
                steps=job.sampling.steps,
                size=job.training.resolution,
            )
        except Exception as exc:  # noqa: BLE001 - a sampler failure must not lose the comparison
            index["note"] = f"samples failed: {type(exc).__name__}: {exc}"
        else:
            pairs = [(prompt, trig, seed) for prompt, trig in plan for seed in seeds]
            for (prompt, trig, seed), path in zip(pairs, paths, strict=False):
                index["images"].append({"prompt": prompt, "seed": seed, "trigger": trig, "path": str(path)})
            if len(paths) != len(pairs):
                index["note"] = f"the sampler returned {len(paths)} images for {len(pairs)} prompt/seed pairs"
    (out / SAMPLES_INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
    return index
