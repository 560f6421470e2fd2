"""Kohya GUI presets and sd-scripts TOML configs import; every key is accounted for exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
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
    assert len(builtin_names()) == 24  # face, object and style for each of the 8 families
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


# --- secrets: named in the report, their values nowhere ------------------------------------------------------------

WANDB_KEY = "3f9c1a7e2b8d4c6f0a5e9b1d7c3f8a2e6b4d0c9f"  # 40 hex digits, like a real wandb key
HF_TOKEN = "hf_QmVtWkRxYzNhTnBvS2pMdUZ3R2hUeWVvUnNXaQ"  # like a real Hugging Face user token
SECRETS = (WANDB_KEY, HF_TOKEN, "s3cr3t-Passw0rd!")


def _run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *argv], capture_output=True, text=True)


def _nowhere(secrets: tuple[str, ...], *texts: str) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text


def test_secrets_in_a_gui_preset_are_named_and_never_imported(fixtures_dir: Path, tmp_path: Path) -> None:
    preset = json.loads((fixtures_dir / "kohya_ss_presets" / "loha-sd15.json").read_text())
    preset["wandb_api_key"] = WANDB_KEY
    preset["huggingface_token"] = HF_TOKEN
    preset["additional_parameters"] = (
        f"--max_grad_norm=0 --wandb_api_key={WANDB_KEY} --huggingface_token {HF_TOKEN} --db-password 's3cr3t-Passw0rd!'"
    )
    path = tmp_path / "leaky.json"
    path.write_text(json.dumps(preset))
    report = import_file(path)
    entries = {e.key: e for e in report.entries}
    assert entries["wandb_api_key"].detail == entries["huggingface_token"].detail == "secret: not imported"
    assert (
        "--wandb_api_key, --huggingface_token, --db-password: secret: not imported"
        in entries["additional_parameters"].detail
    )
    assert report.layer["backend_args"]["kohya"]["max_grad_norm"] == 0  # the rest still imports
    assert sorted(e.key for e in report.entries) == sorted(preset)  # each key still reported exactly once
    out = _run_cli("presets", "import", str(path), "-o", str(tmp_path / "p.yaml"))
    assert out.returncode == 0, out.stderr
    printed = _run_cli("presets", "import", str(path))  # the layer printed as YAML on stdout
    _nowhere(SECRETS, report.text(), json.dumps(report.layer), out.stdout, out.stderr, printed.stdout, printed.stderr)
    _nowhere(SECRETS, (tmp_path / "p.yaml").read_text())
    assert "secret: not imported" in out.stdout


def test_secrets_in_an_sd_scripts_toml_are_named_and_never_imported(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        f'network_dim = 8\nwandb_api_key = "{WANDB_KEY}"\nlog_with = "wandb"\n'
        f'[huggingface]\nhuggingface_token = "{HF_TOKEN}"\nhuggingface_repo_id = "me/lora"\n'
    )
    report = import_file(path)
    ignored = {e.key: e.detail for e in report.ignored()}
    assert ignored["wandb_api_key"] == ignored["huggingface_token"] == "secret: not imported"
    assert report.layer["network"]["rank"] == 8 and report.layer["backend_args"]["kohya"]["log_with"] == "wandb"
    out = _run_cli("presets", "import", str(path), "-o", str(tmp_path / "p.yaml"))
    assert out.returncode == 0, out.stderr
    _nowhere(
        SECRETS, report.text(), json.dumps(report.layer), out.stdout, out.stderr, (tmp_path / "p.yaml").read_text()
    )


def test_a_secret_is_never_exported(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(f"network: {{rank: 8}}\nbackend_args: {{kohya: {{wandb_api_key: '{WANDB_KEY}'}}}}\n")
    for target in ("kohya-gui", "sd-scripts"):
        out = _run_cli("presets", "export", str(job), "--to", target, "-o", str(tmp_path / f"out.{target}"))
        assert out.returncode != 0 and "backend_args.kohya.wandb_api_key holds a secret" in out.stderr
        assert "Traceback" not in out.stderr and not (tmp_path / f"out.{target}").exists()
        _nowhere(SECRETS, out.stdout, out.stderr)


# --- export says what a run renders ---------------------------------------------------------------------------------


def test_export_writes_the_options_a_run_renders(tmp_path: Path) -> None:
    from backends.kohya.options import build_options

    layer = {
        "family": "sdxl",
        "network": {"type": "lokr", "rank": 8, "args": {"factor": 4}},
        "training": {"steps": 300, "optimizer": "sgd", "precision": "fp32", "text_encoder_lr": 5e-5},
        "saving": {"every_n_steps": 50, "keep_last": 2},
        "distributed": {"ddp_timeout_minutes": 30},
    }
    exported = to_sd_scripts(layer)
    job = build_job(merge_layers(REQUIRED, layer))
    rendered, _ = build_options(job, rendered=tmp_path, output=tmp_path, tokenizers=None, cpu=False, resume=None)
    assert {k: rendered[k] for k in exported if k in rendered} == {k: v for k, v in exported.items() if k in rendered}
    assert exported["optimizer_type"] == "SGDNesterov" and exported["network_args"] == ["algo=lokr", "factor=4"]
    assert not {"pretrained_model_name_or_path", "output_dir", "dataset_config"} & set(exported)  # no path
    gui = to_kohya_gui(layer)
    assert (gui["LoRA_type"], gui["optimizer"], gui["factor"]) == ("LyCORIS/LoKr", "SGDNesterov", 4)
    back = import_sd_scripts_toml(exported).layer
    assert back["distributed"]["ddp_timeout_minutes"] == 30 and back["training"]["text_encoder_lr"] == 5e-5


def test_shuffled_captions_round_trip() -> None:
    layer = {"trigger": "ohwx", "training": {"steps": 10, "shuffle_captions": True}}
    toml = to_sd_scripts(layer)
    assert (toml["shuffle_caption"], toml["keep_tokens"]) == (True, 1)
    assert import_sd_scripts_toml(toml).layer["training"]["shuffle_captions"] is True
    assert import_kohya_gui(to_kohya_gui(layer)).layer["training"]["shuffle_captions"] is True
