"""Kohya GUI presets and sd-scripts TOML configs import; every key is accounted for exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import LoraforgeError
from orchestrator.job import build_job, job_to_dict, merge_layers
from orchestrator.presets import builtin_names, load_preset_layer
from orchestrator.presets.kohya_export import to_kohya_gui, to_sd_scripts
from orchestrator.presets.kohya_import import import_file, import_kohya_gui, import_sd_scripts_toml

REQUIRED = {"name": "x", "base_model": "m", "dataset": "/d", "output": {"dir": "/r"}}


def _presets(fixtures: Path) -> list[Path]:
    return sorted((fixtures / "kohya_ss_presets").rglob("*.json"))


def test_all_34_kohya_presets_import_and_validate(fixtures_dir: Path) -> None:
    files = _presets(fixtures_dir)
    assert len(files) == 34
    for path in files:
        report = import_file(path)
        keys = list(json.loads(path.read_text()).keys())
        assert sorted(e.key for e in report.entries) == sorted(keys), path.name  # each key exactly once
        assert import_file(path).text() == report.text()  # deterministic
        layer = merge_layers({**REQUIRED, "training": {"steps": 1}}, report.layer)
        build_job(layer, path.name)


def test_values_are_typed_and_mapped(fixtures_dir: Path) -> None:
    report = import_file(fixtures_dir / "kohya_ss_presets" / "SDXL - LoRA AI_Now ADamW v1.0.json")
    layer = report.layer
    assert layer["family"] == "sdxl"
    assert layer["network"] == {"type": "lora", "rank": 32, "alpha": 32.0}
    assert layer["training"]["steps"] == 320 and layer["training"]["seed"] == 12345  # "320", "12345" coerced
    assert layer["backend_args"]["kohya"]["max_token_length"] == 75  # "75" typed like sd-scripts' int option
    ignored = {e.key: e.detail for e in report.ignored()}
    assert "path stripped" in ignored["lora_network_weights"]
    assert ignored["conv_dim"].startswith("only used by LyCORIS")


def test_lycoris_types_become_network_types(fixtures_dir: Path) -> None:
    kinds = {}
    for path in _presets(fixtures_dir):
        kinds[path.name] = import_file(path).layer.get("network", {}).get("type")
    assert kinds["loha-sd15.json"] == "loha"
    assert kinds["lokr-sd15.json"] == "lokr"
    assert kinds["ia3-sd15.json"] == "ia3"
    assert kinds["flux1D - adamw8bit fp8.json"] == "lora"
    assert import_file(fixtures_dir / "kohya_ss_presets" / "flux1D - adamw8bit fp8.json").layer["family"] == "flux"


def test_sd_scripts_configs_import_and_dataset_configs_are_recognised(fixtures_dir: Path) -> None:
    configs, datasets = 0, 0
    for path in sorted((fixtures_dir / "sd_scripts_toml").glob("*.toml")):
        try:
            report = import_file(path)
        except LoraforgeError as exc:
            assert "dataset config" in exc.message, path.name
            datasets += 1
            continue
        configs += 1
        build_job(merge_layers({**REQUIRED, "training": {"steps": 1}}, report.layer), path.name)
    assert configs == 3 and datasets == 29


def test_additional_parameters_are_parsed() -> None:
    report = import_kohya_gui(
        {"additional_parameters": '--max_grad_norm=0 --network_train_unet_only --log_prefix "xl loha"'}
    )
    assert report.layer["backend_args"]["kohya"] == {
        "max_grad_norm": 0,
        "network_train_unet_only": True,
        "log_prefix": "xl loha",
    }


def test_every_builtin_preset_is_a_valid_job() -> None:
    assert len(builtin_names()) == 9
    for name in builtin_names():
        build_job(merge_layers(REQUIRED, load_preset_layer(name)), name)


def test_unknown_preset_names_the_builtins() -> None:
    with pytest.raises(LoraforgeError, match="face-sdxl"):
        load_preset_layer("nope")


layers = st.fixed_dictionaries(
    {
        "family": st.sampled_from(["sd15", "sdxl"]),
        "network": st.fixed_dictionaries(
            {
                "type": st.sampled_from(["lora", "loha", "lokr"]),
                "rank": st.integers(1, 256),
                "alpha": st.integers(1, 256),
            }
        ),
        "training": st.fixed_dictionaries(
            {
                "learning_rate": st.sampled_from([1e-4, 5e-5, 1e-5, 3e-4]),
                "steps": st.integers(1, 5000),
                "batch_size": st.integers(1, 8),
                "gradient_accumulation": st.integers(1, 4),
                "resolution": st.sampled_from([512, 768, 1024]),
                "optimizer": st.sampled_from(["adamw", "adamw8bit", "prodigy", "adafactor", "lion"]),
                "scheduler": st.sampled_from(["constant", "cosine", "linear"]),
                "warmup_steps": st.integers(1, 200),
                "seed": st.integers(1, 2**31),
                "precision": st.sampled_from(["fp16", "bf16", "fp32"]),
                "gradient_checkpointing": st.booleans(),
                "cache_latents": st.booleans(),
            }
        ),
        "saving": st.fixed_dictionaries({"every_n_steps": st.integers(1, 1000)}),
    }
)


def _mappable(layer: dict) -> dict:
    job = build_job(merge_layers(REQUIRED, layer))
    data = job_to_dict(job)
    return {k: data[k] for k in ("family", "network", "training", "saving")}


@settings(max_examples=60, deadline=None)
@given(layers)
def test_round_trip_through_kohya_gui(layer: dict) -> None:
    back = import_kohya_gui(json.loads(json.dumps(to_kohya_gui(layer)))).layer
    assert _mappable(back) == _mappable(layer)


@settings(max_examples=60, deadline=None)
@given(layers)
def test_round_trip_through_sd_scripts_toml(layer: dict) -> None:
    import tomllib

    import tomli_w

    back = import_sd_scripts_toml(tomllib.loads(tomli_w.dumps(to_sd_scripts(layer)))).layer
    back["family"] = layer["family"]  # a --config_file does not say the family: the script does
    assert _mappable(back) == _mappable(layer)


def test_presets_cli_import_export_round_trip(fixtures_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    preset = fixtures_dir / "kohya_ss_presets" / "loha-sd15.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "presets",
            "import",
            str(preset),
            "-o",
            str(tmp_path / "p.yaml"),
            "--backend",
            "simpletuner",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "not for simpletuner: backend_args.kohya." in out.stdout
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "presets",
            "export",
            str(tmp_path / "p.yaml"),
            "--to",
            "kohya-gui",
            "-o",
            str(tmp_path / "back.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    again = import_file(tmp_path / "back.json").layer
    first = load_preset_layer(str(tmp_path / "p.yaml"))
    assert again["network"] == first["network"]
    assert again["training"]["learning_rate"] == first["training"]["learning_rate"]
