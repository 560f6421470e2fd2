"""Arms: backends crossed with --vary values, each a validated JobSpec with a readable label."""

from __future__ import annotations

from pathlib import Path

import pytest
from compare_runs import make_job_data

from orchestrator.compare.arms import expand_arms, parse_backends, parse_vary
from orchestrator.errors import ConfigError, LoraforgeError


def test_backends_times_values(tmp_path: Path) -> None:
    arms = expand_arms(make_job_data(tmp_path), ["kohya", "simpletuner"], ["network.rank=8,16"])
    assert [a.label for a in arms] == [
        "kohya network.rank=8",
        "kohya network.rank=16",
        "simpletuner network.rank=8",
        "simpletuner network.rank=16",
    ]
    assert [a.job.network.rank for a in arms] == [8, 16, 8, 16]
    assert [a.backend for a in arms] == ["kohya", "kohya", "simpletuner", "simpletuner"]
    assert arms[1].varied == {"network.rank": 16}
    assert arms[1].job.name == "cmp-kohya-network.rank-16"
    assert len({a.job.name for a in arms}) == 4  # distinct run folder names


def test_values_are_read_like_set(tmp_path: Path) -> None:
    arms = expand_arms(
        make_job_data(tmp_path),
        ["simpletuner"],
        ["training.learning_rate=1e-4,5e-5", "training.gradient_checkpointing=true,false"],
    )
    assert len(arms) == 4
    assert [a.job.training.learning_rate for a in arms] == [1e-4, 1e-4, 5e-5, 5e-5]
    assert [a.job.training.gradient_checkpointing for a in arms] == [True, False, True, False]
    assert arms[0].label == "simpletuner training.learning_rate=0.0001 training.gradient_checkpointing=true"


def test_varying_steps_replaces_epochs(tmp_path: Path) -> None:
    data = make_job_data(tmp_path)
    data["training"] = {"epochs": 2}
    arms = expand_arms(data, ["kohya"], ["training.steps=4,6"])
    assert [(a.job.training.steps, a.job.training.epochs) for a in arms] == [(4, None), (6, None)]


def test_backends_alone(tmp_path: Path) -> None:
    arms = expand_arms(make_job_data(tmp_path), ["kohya", "simpletuner"])
    assert [(a.label, a.varied) for a in arms] == [("kohya", {}), ("simpletuner", {})]


def test_bad_field_and_value_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        expand_arms(make_job_data(tmp_path), ["kohya"], ["network.rnak=8,16"])
    assert "network.rnak: unknown setting" in str(err.value)
    with pytest.raises(ConfigError) as err:
        expand_arms(make_job_data(tmp_path), ["kohya"], ["network.rank=0,8"])
    assert "network.rank: got 0" in str(err.value)


@pytest.mark.parametrize("text", ["network.rank", "network.rank=", "=8,16", "network.rank=8,8"])
def test_bad_vary(text: str) -> None:
    with pytest.raises(LoraforgeError) as err:
        parse_vary(text)
    assert err.value.hint


def test_parse_backends() -> None:
    assert parse_backends("kohya, simpletuner") == ["kohya", "simpletuner"]
    with pytest.raises(LoraforgeError, match="unknown backend 'onetrainer'") as err:
        parse_backends("kohya,onetrainer")
    assert "kohya, simpletuner" in (err.value.hint or "")
    with pytest.raises(LoraforgeError):
        parse_backends("kohya,kohya")
