"""Equivalence: each job setting's backend options are found by rendering with the setting changed (no launch)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from orchestrator.compare.equivalence import alternative, check_equivalence, setting_names
from orchestrator.job import JobSpec, build_job
from orchestrator.tiny.dataset import make_dataset


def _job(tmp_path: Path, **training: object) -> JobSpec:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    return build_job(
        {
            "name": "eq",
            "base_model": str(model),
            "dataset": str(make_dataset(tmp_path / "data", count=2, size=64)),
            "network": {"rank": 8},
            "training": {"steps": 10, "resolution": 128, **training},
        }
    )


def _needs(backend: str) -> None:
    if importlib.util.find_spec(f"backends.{backend}") is None:
        pytest.skip(f"the {backend} backend module is not in this checkout")


def test_every_setting_has_a_valid_different_value(tmp_path: Path) -> None:
    job = _job(tmp_path)
    names = setting_names(job)
    assert "network.rank" in names and "training.learning_rate" in names and "saving.every_n_steps" in names
    assert "training.epochs" not in names  # steps decide the length here
    assert "network.args" not in names and "name" not in names and "output.dir" not in names
    for name in names:
        other = alternative(job, name)
        assert other is not None, name
        section, field = name.split(".")
        assert getattr(getattr(other, section), field) != getattr(getattr(job, section), field), name
        changed = {
            f"{s}.{k}"
            for s in ("network", "training", "saving")
            for k, v in getattr(other, s).model_dump().items()
            if getattr(job, s).model_dump()[k] != v
        }
        assert changed == {name}


def test_simpletuner_mapping_found_by_rendering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _needs("simpletuner")
    monkeypatch.setenv("LORAFORGE_SIMPLETUNER_DEVICE", "cpu")
    eq = check_equivalence(_job(tmp_path), ["simpletuner"], tmp_path / "scratch")
    assert not (tmp_path / "scratch").exists()  # the scratch renders are removed
    options = {m.field: m.options["simpletuner"] for m in eq.mappings}
    assert options["network.rank"]["lora_rank"] == 8
    assert options["training.learning_rate"] == {"learning_rate": 0.0001}
    assert options["training.steps"] == {"max_train_steps": 10}
    # Settings that live in the dataset file are found there, not only in Rendered.values.
    assert options["training.repeats"] == {"multidatabackend:0.repeats": 0}
    assert options["training.resolution"]["multidatabackend:0.resolution"] == 128
    # Paths inside the scratch folder are shown relative to the rendered folder, never the scratch path.
    assert "scratch" not in json.dumps(eq.to_json())
    # What the backend says it cannot express is listed as not equivalent.
    assert any(line.startswith("simpletuner: training.precision=bf16") for line in eq.not_equivalent)


def test_a_backend_that_cannot_render_is_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _needs("simpletuner")
    monkeypatch.setenv("LORAFORGE_SIMPLETUNER_DEVICE", "cpu")
    job = _job(tmp_path).model_copy(update={"family": "sd15"})  # SimpleTuner 4.10.1 refuses SD 1.5
    eq = check_equivalence(job, ["simpletuner"])
    assert "simpletuner" in eq.unavailable
    assert eq.not_equivalent[0].startswith("simpletuner: could not render the job")


def test_kohya_and_simpletuner_side_by_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _needs("kohya")
    _needs("simpletuner")
    monkeypatch.setenv("LORAFORGE_SIMPLETUNER_DEVICE", "cpu")
    eq = check_equivalence(_job(tmp_path), ["kohya", "simpletuner"])
    assert eq.unavailable == {}
    by_field = {m.field: m for m in eq.mappings}
    for name in ("network.rank", "training.learning_rate", "training.steps", "training.seed"):
        assert by_field[name].options["kohya"] and by_field[name].options["simpletuner"], name
    for line in eq.not_equivalent:
        assert line.startswith(("kohya: ", "simpletuner: ")) or "not expressed by" in line
