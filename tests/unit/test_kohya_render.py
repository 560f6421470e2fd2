"""Rendering sd-scripts' files: values round-trip through TOML, argv is a pure snapshot, bad input stops early."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import base
from backends.base import Resume
from backends.kohya import KohyaBackend
from orchestrator.envs import BackendEnv, save_env
from orchestrator.errors import ConfigError, LoraforgeError
from orchestrator.job import build_job
from orchestrator.training import preflight


def job(tmp_path: Path, **extra: object):  # type: ignore[no-untyped-def]
    data = {
        "name": "me",
        "base_model": "stabilityai/stable-diffusion-xl-base-1.0",
        "family": "sdxl",
        "dataset": str(tmp_path),
        "output": {"dir": str(tmp_path / "runs")},
        "training": {"steps": 10},
    }
    data.update(extra)
    return build_job(data)


def test_render_writes_explicit_steps_txt_captions_and_reads_back(tmp_path: Path) -> None:
    rendered = KohyaBackend().render(job(tmp_path, saving={"every_n_steps": 5, "keep_last": 2}), tmp_path / "rendered")
    config = tomllib.loads(rendered.files["config"].read_text())
    assert config["max_train_steps"] == 10
    assert config["caption_extension"] == ".txt"
    assert (
        config["network_module"] == "networks.lora" and config["network_dim"] == 16 and config["network_alpha"] == 16.0
    )
    assert config["save_state"] is True and config["save_last_n_steps"] == 10
    assert config["network_train_unet_only"] is True  # no text encoder lr given
    dataset = tomllib.loads(rendered.files["dataset"].read_text())
    assert dataset["datasets"][0]["subsets"][0]["image_dir"] == str(tmp_path)
    assert dataset["general"]["caption_extension"] == ".txt"
    accelerate = rendered.files["accelerate"].read_text()
    assert "num_processes: 1" in accelerate and 'distributed_type: "NO"' in accelerate


def test_resume_adds_skip_until_initial_step(tmp_path: Path) -> None:
    state = tmp_path / "me-step00000002-state"
    rendered = KohyaBackend().render(job(tmp_path), tmp_path / "r", resume=Resume(state, 2))
    config = tomllib.loads(rendered.files["config"].read_text())
    assert config["resume"] == str(state) and config["skip_until_initial_step"] is True


def test_lycoris_types_use_the_lycoris_module(tmp_path: Path) -> None:
    rendered = KohyaBackend().render(job(tmp_path, network={"type": "loha", "args": {"conv_dim": 4}}), tmp_path / "r")
    config = tomllib.loads(rendered.files["config"].read_text())
    assert config["network_module"] == "lycoris.kohya" and config["network_args"] == ["algo=loha", "conv_dim=4"]


def test_argv_is_a_pure_snapshot(tmp_path: Path) -> None:
    backend = KohyaBackend()
    j = job(tmp_path)
    rendered = backend.render(j, tmp_path / "r")
    env = BackendEnv("kohya", Path("/envs/kohya/bin/python"), root=Path("/opt/sd-scripts"))
    launch = backend.command(j, rendered, env)
    assert launch.argv == [
        "/envs/kohya/bin/python",
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(tmp_path / "r" / "accelerate.yaml"),
        "sdxl_train_network.py",
        "--config_file",
        str(tmp_path / "r" / "config.toml"),
    ]
    assert launch.cwd == Path("/opt/sd-scripts") and launch.env["PYTHONUNBUFFERED"] == "1"


def test_unknown_backend_args_are_refused_before_launch(tmp_path: Path) -> None:
    with pytest.raises(LoraforgeError, match="no option max_grad_nrom"):
        KohyaBackend().render(job(tmp_path, backend_args={"kohya": {"max_grad_nrom": 1.0}}), tmp_path / "r")
    rendered = KohyaBackend().render(job(tmp_path, backend_args={"kohya": {"max_grad_norm": 0.5}}), tmp_path / "r2")
    assert tomllib.loads(rendered.files["config"].read_text())["max_grad_norm"] == 0.5


awkward = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=awkward, name=awkward, extra=awkward)
def test_awkward_strings_round_trip_through_toml(tmp_path: Path, model: str, name: str, extra: str) -> None:
    # quotes, backslashes, newlines, '#', '=' and any unicode: written by the toml filter, read back equal
    j = job(
        tmp_path,
        base_model=model,
        backend_args={"kohya": {"metadata_title": name, "training_comment": extra + ' "#=\\\n'}},
    )
    rendered = KohyaBackend().render(j, tmp_path / "r")
    config = tomllib.loads(rendered.files["config"].read_text(encoding="utf-8"))
    assert config["pretrained_model_name_or_path"] == model
    assert config["metadata_title"] == name
    assert config["training_comment"] == extra + ' "#=\\\n'


def _images(folder: Path) -> None:
    from PIL import Image

    folder.mkdir(exist_ok=True)
    Image.new("RGB", (64, 64)).save(folder / "a.png")


def test_preflight_catches_bad_input_before_anything_launches(tmp_path: Path) -> None:
    backend = base.get("kohya")
    with pytest.raises(LoraforgeError, match="dataset folder .* does not exist"):
        preflight(job(tmp_path, dataset=str(tmp_path / "missing")), backend)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoraforgeError, match="has no images"):
        preflight(job(tmp_path, dataset=str(tmp_path / "empty")), backend)
    _images(tmp_path / "data")
    with pytest.raises(LoraforgeError, match="base model /nowhere/model.safetensors does not exist"):
        preflight(job(tmp_path, dataset=str(tmp_path / "data"), base_model="/nowhere/model.safetensors"), backend)
    with pytest.raises(LoraforgeError, match="kohya backend is not set up") as info:
        preflight(job(tmp_path, dataset=str(tmp_path / "data")), backend)
    assert "loraforge setup kohya" in (info.value.hint or "")
    with pytest.raises(LoraforgeError, match="cannot tell the model family"):
        preflight(
            job(tmp_path, dataset=str(tmp_path / "data"), family=None, base_model="someone/mystery-model"), backend
        )
    with pytest.raises(ConfigError, match="network.rank: got 0"):
        job(tmp_path, network={"rank": 0})
    with pytest.raises(ConfigError, match="family: got 'sd3'"):
        job(tmp_path, family="sd3")


def test_preflight_reports_a_broken_environment(tmp_path: Path) -> None:
    _images(tmp_path / "data")
    save_env(BackendEnv("kohya", Path("/no/such/python"), root=tmp_path))
    with pytest.raises(LoraforgeError, match="no longer exists"):
        preflight(job(tmp_path, dataset=str(tmp_path / "data")), base.get("kohya"))
