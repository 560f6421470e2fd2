"""Step plans against hand-worked cases (uneven buckets, gradient accumulation, processes) and --explain."""

from __future__ import annotations

import pytest

from orchestrator.errors import LoraforgeError
from orchestrator.explain import explain
from orchestrator.job import build_job, merge_layers
from orchestrator.steps import apply_step_plan, bucket_for, plan_steps

SQUARE = (1024, 1024)
PORTRAIT = (768, 1152)
TEN = [SQUARE] * 5 + [PORTRAIT] * 5


def test_buckets_keep_the_aspect_within_the_area() -> None:
    assert bucket_for(*SQUARE, 1024) == (1024, 1024)
    assert bucket_for(*PORTRAIT, 1024) == (832, 1216)  # SDXL's own 832x1216 bucket
    assert bucket_for(4000, 3000, 512) == (576, 448)


def test_kohya_counts_partial_batches_per_bucket() -> None:
    # 5 + 5 images, batch 4: ceil(5/4) + ceil(5/4) = 4 batches per epoch (not ceil(10/4) = 3)
    plan = plan_steps(TEN, backend="kohya", resolution=1024, batch_size=4, epochs=3)
    assert plan.buckets == {(1024, 1024): 5, (832, 1216): 5}
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (4, 4, 12)


def test_simpletuner_keeps_only_full_batches() -> None:
    plan = plan_steps(TEN, backend="simpletuner", resolution=1024, batch_size=4, epochs=3)
    assert (plan.batches_per_epoch, plan.total_steps) == (2, 6)


def test_repeats_and_gradient_accumulation() -> None:
    # repeats 2: 10 per bucket, batch 4 -> 3 + 3 = 6 batches; accumulation 3 -> 2 optimizer steps per epoch
    plan = plan_steps(TEN, backend="kohya", resolution=1024, repeats=2, batch_size=4, gradient_accumulation=3, epochs=5)
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (6, 2, 10)


def test_processes_divide_the_steps_per_epoch() -> None:
    # 6 batches over 2 processes with accumulation 2: ceil(6 / 2 / 2) = 2
    plan = plan_steps(
        TEN, backend="kohya", resolution=1024, repeats=2, batch_size=4, gradient_accumulation=2, processes=2, epochs=1
    )
    assert plan.total_steps == 2


def test_explicit_steps_are_kept_and_explained_in_epochs() -> None:
    plan = plan_steps(TEN, backend="kohya", resolution=1024, batch_size=4, steps=10)
    assert plan.total_steps == 10 and plan.epochs == 2.5


JOB = {"name": "me", "base_model": "m", "dataset": "/d", "output": {"dir": "/r"}}


def test_apply_converts_epochs_to_explicit_steps() -> None:
    job = build_job({**JOB, "training": {"epochs": 3, "batch_size": 4, "resolution": 1024}})
    planned, plan = apply_step_plan(job, TEN, "kohya")
    assert planned.training.steps == 12 and planned.training.epochs is None
    assert "12 steps = 3 epochs" in plan.text()


@pytest.mark.parametrize(
    ("backend", "images", "share", "held"),
    [("kohya", 8, 0.25, 2), ("kohya", 10, 0.15, 1), ("simpletuner", 8, 0.25, 2), ("simpletuner", 3, 0.1, 1)],
)
def test_images_held_out_for_validation_are_not_trained_on(backend: str, images: int, share: float, held: int) -> None:
    # kohya: the real run in tests/fixtures/kohya/validation trained 6 of 8 images (3 steps of 2 per epoch)
    job = build_job({**JOB, "training": {"epochs": 1, "batch_size": 2, "resolution": 1024, "validation_split": share}})
    planned, plan = apply_step_plan(job, [SQUARE] * images, backend)
    assert plan.held_out == held and plan.images == images - held
    assert f"({held} more held out for validation)" in plan.text()


def test_no_full_batch_is_a_clear_error() -> None:
    job = build_job({**JOB, "training": {"epochs": 3, "batch_size": 4, "resolution": 1024}})
    with pytest.raises(LoraforgeError, match="0 steps"):
        apply_step_plan(job, [SQUARE, PORTRAIT, (2048, 512)], "simpletuner")


def test_explain_names_each_values_source() -> None:
    layers = [
        ("preset face-sdxl", {"network": {"rank": 32}, "training": {"epochs": 10, "learning_rate": 1e-4}}),
        ("job file job.yaml", {**JOB, "training": {"steps": 100}}),
        ("flag", {"network": {"rank": 8}}),
    ]
    data = merge_layers(*(layer for _, layer in layers))
    text = explain(build_job(data), layers)
    rows = {line.split()[0]: line for line in text.splitlines()}
    assert rows["network.rank"].endswith("flag")
    assert rows["training.learning_rate"].endswith("preset face-sdxl")
    assert rows["training.steps"].endswith("job file job.yaml")
    assert rows["training.batch_size"].endswith("default")
