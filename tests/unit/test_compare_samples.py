"""An arm's samples: what the comparison asks the sampler for (no sampler is run here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from compare_runs import make_job_data

from orchestrator.compare.samples import make_samples
from orchestrator.job import build_job


def test_samples_use_the_jobs_sampling_steps_and_training_resolution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the sampler's own 20 steps at 1024 px: on a CPU with SDXL's full UNet that is hours per arm."""
    asked: dict[str, Any] = {}

    def fake_generate(lora: Path, base_model: str, prompts: list[str], seeds: list[int], out: Path, **kw: Any):  # type: ignore[no-untyped-def]
        asked.update(kw, base_model=base_model, prompts=prompts)
        return [out / f"sample-{i:02d}.png" for i in range(len(prompts) * len(seeds))]

    monkeypatch.setattr("orchestrator.lora.sample.generate", fake_generate)
    job = build_job(make_job_data(tmp_path, training={"steps": 2, "resolution": 64}, sampling={"steps": 3}))
    index = make_samples(job, tmp_path / "x.safetensors", tmp_path / "run")
    assert asked["steps"] == 3 and asked["size"] == 64
    assert asked["base_model"] == job.base_model
    assert index["note"] is None and len(index["images"]) == len(asked["prompts"])
    assert json.loads((tmp_path / "run" / "samples" / "samples.json").read_text()) == index
