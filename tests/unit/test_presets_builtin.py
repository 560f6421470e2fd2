"""Every built-in preset: a valid job for its family, found by subject and family, listed by `presets list`, and
(for the families SimpleTuner trains) rendered by SimpleTuner with the preset's values."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args

import pytest

from backends.simpletuner import SimpleTunerBackend
from orchestrator.cli import main
from orchestrator.dataset.model import load_dataset
from orchestrator.envs import BackendEnv, resolve_runtime
from orchestrator.job import Family, Subject, build_job, merge_layers
from orchestrator.presets import BUILTIN, builtin_names, describe, load_preset_layer, preset_for
from orchestrator.runs import create_run
from orchestrator.tiny.dataset import make_dataset

NEW = {"sd3", "chroma", "lumina2", "qwen_image", "flux2"}
CPU = resolve_runtime(BackendEnv("simpletuner", Path("/venv/bin/python"), versions={"cuda": "no"}), environ={})


def job_from(name: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    data = tmp_path / "data"
    if not data.exists():
        make_dataset(data, count=3, size=64)
        for caption in data.glob("*.txt"):
            caption.write_text("ohwx, " + caption.read_text())
    base = {"name": "p", "base_model": str(model), "dataset": str(data), "trigger": "ohwx"}
    return build_job(merge_layers(base, load_preset_layer(name), {"output": {"dir": str(tmp_path / "runs")}}))


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_preset_is_a_valid_job_for_its_family(name: str, tmp_path: Path) -> None:
    job = job_from(name, tmp_path)
    subject, _, family = name.partition("-")
    assert (job.subject, job.family) == (subject, family)
    assert job.training.steps and job.saving.every_n_steps and job.saving.every_n_steps <= job.training.steps
    assert describe(name) and not describe(name).startswith("loraforge")


@pytest.mark.parametrize("family", get_args(Family))
@pytest.mark.parametrize("subject", get_args(Subject))
def test_there_is_a_preset_for_every_subject_and_family(subject: str, family: str) -> None:
    assert preset_for(subject, family) in builtin_names()


@pytest.mark.parametrize("name", sorted(f"{s}-{f}" for s in get_args(Subject) for f in NEW))
def test_new_presets_open_with_their_command_and_cite_their_sources(name: str) -> None:
    text = (BUILTIN / f"{name}.yaml").read_text()
    first = text.splitlines()[0]
    subject = name.partition("-")[0]
    assert first.startswith(f"# Use: loraforge train PHOTOS --subject {subject} ") and f"--preset {name}" in first
    assert "--backend simpletuner" in first  # the backend that trains every new family
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert re.search(r"quickstart/[A-Z0-9_]+\.md|examples/[a-z0-9_]+\.peft-lora", header), header
    assert "face/object/style presets for flux" in header  # how the variants were derived


def test_variants_differ_as_the_flux_presets_do() -> None:
    for family in NEW:
        face, obj, style = (load_preset_layer(f"{s}-{family}") for s in ("face", "object", "style"))
        assert obj["training"]["steps"] == face["training"]["steps"] * 3 // 2
        assert obj["network"] == face["network"]
        assert style["network"]["rank"] == 2 * face["network"]["rank"]
        assert style["training"]["learning_rate"] == face["training"]["learning_rate"] / 2
        assert style["training"]["steps"] == 2 * face["training"]["steps"]


def test_presets_list_shows_them_all(capsys: pytest.CaptureFixture) -> None:
    assert main(["presets", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == builtin_names()
    assert "face-qwen_image" in builtin_names()
    shown = dict(line.split(maxsplit=1) for line in lines)
    assert shown["face-qwen_image"].startswith("Faces on Qwen-Image")


@pytest.mark.parametrize("name", sorted(f"{s}-{f}" for s in get_args(Subject) for f in NEW))
def test_simpletuner_renders_each_new_preset(name: str, tmp_path: Path) -> None:
    job = job_from(name, tmp_path)
    if job.saving.format == "kohya" and job.family in ("sd3", "lumina2"):  # as the preset's Use line says
        job = job.model_copy(update={"saving": job.saving.model_copy(update={"format": "diffusers"})})
    gpu = resolve_runtime(BackendEnv("simpletuner", CPU.python, versions={"cuda": "yes"}), environ={})
    rendered = SimpleTunerBackend().render(job, load_dataset(job.dataset), create_run(job, "simpletuner"), gpu)
    config = json.loads(rendered.files["config"].read_text())
    assert config["model_family"] == job.family
    assert (config["lora_rank"], config["learning_rate"], config["max_train_steps"]) == (
        job.network.rank,
        job.training.learning_rate,
        job.training.steps,
    )
    assert config["mixed_precision"] == "bf16" and config["gradient_checkpointing"] is True
    for key, value in job.backend_args.get("simpletuner", {}).items():
        assert config[key] == value
    if job.family == "qwen_image":
        assert (config["optimizer"], config["lr_scheduler"], config["gradient_accumulation_steps"]) == (
            "optimi-lion",
            "constant_with_warmup",
            4,
        )


def test_presets_pass_simpletuner_only_options_it_has(real_registry: Path) -> None:
    """backend_args.simpletuner keys are checked against the installed SimpleTuner's option registry (its source is
    read, nothing imported); skipped where SimpleTuner is not set up."""
    from backends.simpletuner import known_options
    from orchestrator.envs import load_registry

    env = load_registry().get("simpletuner")
    names = known_options(env.python) if env is not None and env.python.exists() else None
    if names is None:
        pytest.skip("SimpleTuner is not set up here: run `loraforge setup simpletuner`")
    used = {
        key
        for name in builtin_names()
        for key in load_preset_layer(name).get("backend_args", {}).get("simpletuner", {})
    }
    assert used and used <= names, used - names
