"""JobSpec: layering, YAML quirks and errors that name the field, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.job import build_job, dump_job, load_yaml_layer, merge_layers, parse_assignment

BASE = {
    "name": "me",
    "base_model": "stabilityai/stable-diffusion-xl-base-1.0",
    "dataset": "/data",
    "output": {"dir": "/runs"},
    "training": {"steps": 10},
}


def test_minimal_job_gets_defaults() -> None:
    job = build_job(BASE)
    assert job.network.rank == 16
    assert job.alpha == 16.0
    assert job.training.steps == 10
    assert job.lora_name == "me"


def test_every_problem_reported_at_once_with_field_value_and_allowed() -> None:
    data = merge_layers(
        BASE, {"network": {"rank": 0}, "training": {"optimizer": "adamx", "resolution": 100}, "colour": 1}
    )
    with pytest.raises(ConfigError) as info:
        build_job(data, "job.yaml")
    text = str(info.value)
    assert "in job.yaml" in text
    assert "network.rank: got 0" in text
    assert "training.optimizer: got 'adamx'; allowed:" in text and "'prodigy'" in text
    assert "training.resolution: got 100; must be a multiple of 64" in text
    assert "colour: unknown setting" in text
    assert len(info.value.problems) == 4


def test_yaml_reads_1e_minus_4_as_a_float(tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text("name: me\nbase_model: m\ndataset: data\ntraining:\n  learning_rate: 1e-4\n  steps: 5\n")
    layer = load_yaml_layer(job_file)
    job = build_job(layer)
    assert job.training.learning_rate == pytest.approx(1e-4)
    assert job.dataset == tmp_path / "data"  # relative to the job file


def test_later_layer_steps_replace_earlier_epochs() -> None:
    merged = merge_layers({"training": {"epochs": 10, "learning_rate": 1e-5}}, BASE)
    assert merged["training"] == {"steps": 10, "learning_rate": 1e-5}
    merged = merge_layers(BASE, {"training": {"epochs": 3}})
    assert merged["training"] == {"epochs": 3}


def test_flags_win_over_file() -> None:
    merged = merge_layers(BASE, parse_assignment("network.rank=32"), parse_assignment("training.learning_rate=5e-5"))
    job = build_job(merged)
    assert job.network.rank == 32
    assert job.training.learning_rate == pytest.approx(5e-5)


def test_steps_or_epochs_required() -> None:
    with pytest.raises(ConfigError, match="training.steps or training.epochs is required"):
        build_job({"name": "me", "base_model": "m", "dataset": "/d"})


def test_name_must_be_safe_for_folders() -> None:
    with pytest.raises(ConfigError, match="name: got 'my job/1'"):
        build_job({**BASE, "name": "my job/1"})


def test_dump_is_loadable_again(tmp_path: Path) -> None:
    job = build_job(merge_layers(BASE, {"trigger": 'ohwx "pérson" #1', "network": {"args": {"conv_dim": 4}}}))
    path = tmp_path / "job.yaml"
    path.write_text(dump_job(job))
    assert build_job(load_yaml_layer(path)) == job


def test_bad_assignment_is_explained() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignment("network.rank")
