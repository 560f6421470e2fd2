"""sd-scripts for real on the tiny SD3.5, Chroma and Lumina 2 through `loraforge train --backend kohya`: the job
names the tiny model's folder, the kohya backend finds sd-scripts' single files in its kohya/ subfolder, renders the
family's script and options, and the LoRA that comes out has sd-scripts' own key names for the family and the image
count sd-scripts recorded. Whether diffusers reads these layouts needs key conversions for SD3 and Lumina 2 (see
test_families_tiny_*.py); here the LoRA is checked against the names sd-scripts writes.

SD3.5 runs in the default set (measured on 2 cores: 41-58 s, peak RSS 11.5 GB, T5-XXL mapped in bf16). Chroma and
Lumina 2 are `slow`: sd-scripts builds them only at full size (Chroma 8.9 B: 2 steps in 4 min, peak RSS 18.8 GB, 15
min on a busy machine; Lumina 2 2.6 B + Gemma 2 2.6 B: 3 steps in 38-83 s, peak RSS 6.3 GB). The tiny models are
built with SimpleTuner's venv (diffusers >= 0.33) and cached.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import usable_env

from orchestrator.lora.safetensors_io import read

pytestmark = pytest.mark.integration


@pytest.fixture
def kohya(backend_home: dict):  # type: ignore[no-untyped-def]
    return usable_env(backend_home, "kohya")


@pytest.fixture
def builder(backend_home: dict) -> Path:
    """The interpreter the tiny builders run with (they import diffusers >= 0.33, which sd-scripts' venv lacks)."""
    return usable_env(backend_home, "simpletuner").python


def train(tmp_path: Path, model: Path, steps: int, **backend_args: Any) -> tuple[list[dict[str, Any]], Path]:
    """`loraforge train` on 4 generated images at 64 px; the events (--json) and the final LoRA."""
    import yaml

    from orchestrator.tiny.dataset import make_dataset

    job = {
        "name": "tiny-family",
        "base_model": str(model),  # the folder: the family from its model_index.json, the files from kohya/
        "dataset": str(make_dataset(tmp_path / "data", count=4, size=64)),
        "trigger": "ohwx",
        "add_trigger": True,
        "network": {"rank": 4, "alpha": 1},
        "training": {"steps": steps, "batch_size": 1, "resolution": 64},
        "saving": {"every_n_steps": 2},
        "output": {"dir": str(tmp_path / "runs")},
        "backend_args": {"kohya": backend_args},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "train", str(tmp_path / "job.yaml"), "--backend", "kohya", "--json"],
        capture_output=True,
        text=True,
        timeout=2700,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[-1]["event"] == "finished"
    return events, Path(events[-1]["lora_path"])


def check_run(events: list[dict[str, Any]], lora: Path, family: str, steps: int) -> dict[str, str]:
    """One Progress per step with its loss, the phases in order, sd-scripts' own image count; the metadata."""
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["step"] for e in progress] == list(range(1, steps + 1)) and progress[-1]["total"] == steps
    assert all(e["loss"] is not None for e in progress)
    phases = [e["name"] for e in events if e["event"] == "phase"]
    assert phases == ["setup", "loading", "caching", "training", "saving", "done"]
    _, metadata = read(lora)
    assert metadata["loraforge_family"] == family
    assert metadata["ss_num_train_images"] == metadata["loraforge_dataset_images"] == "4"
    run = lora.parent.parent
    config = (run / "rendered" / "config.toml").read_text()
    assert "/kohya/" in config and "cache_text_encoder_outputs = true" in config
    return metadata


def modules_of(lora: Path) -> set[str]:
    tensors, _ = read(lora)
    modules = {key.split(".")[0] for key in tensors}
    for module in modules:  # every module whole: down, up and alpha, at the job's rank
        assert {f"{module}.lora_down.weight", f"{module}.lora_up.weight", f"{module}.alpha"} <= set(tensors)
        assert tensors[f"{module}.lora_down.weight"].shape[0] == 4
    return modules


def test_sd3_trains_through_the_kohya_backend(tmp_path: Path, kohya: Any, builder: Path) -> None:
    from orchestrator.tiny import tiny_sd3

    model = tiny_sd3(builder)
    # a 32-token T5 run: at sd-scripts' 256 the full-size T5-XXL takes minutes per caption on 2 cores
    events, lora = train(tmp_path, model, 4, t5xxl_max_token_length=32)
    metadata = check_run(events, lora, "sd3", 4)
    assert metadata["ss_network_module"] == "networks.lora_sd3"
    assert metadata["modelspec.architecture"].startswith("stable-diffusion-3")
    modules = modules_of(lora)
    # 2 joint blocks; the last one's context block is pre-only (no attention projection or MLP)
    pattern = re.compile(
        r"lora_unet_joint_blocks_[01]_(x|context)_block_(attn_qkv|attn_proj|mlp_fc1|mlp_fc2|adaLN_modulation_1)"
    )
    assert len(modules) == 17 and all(pattern.fullmatch(m) for m in modules), sorted(modules)
    assert (lora.parent / "kohya" / "tiny-family-step00000002.safetensors").exists()


@pytest.mark.slow
@pytest.mark.timeout(2700)  # 4 min on a quiet machine, 15 min on a busy one
def test_chroma_trains_through_the_kohya_backend(tmp_path: Path, kohya: Any, builder: Path) -> None:
    from orchestrator.tiny import tiny_chroma

    events, lora = train(tmp_path, tiny_chroma(builder), 2, t5xxl_max_token_length=32)
    metadata = check_run(events, lora, "chroma", 2)
    assert (metadata["ss_network_module"], metadata["ss_model_type"]) == ("networks.lora_flux", "chroma")
    modules = modules_of(lora)
    double = {
        m for m in modules if re.fullmatch(r"lora_unet_double_blocks_\d+_(img|txt)_(attn_qkv|attn_proj|mlp_0|mlp_2)", m)
    }
    single = {m for m in modules if re.fullmatch(r"lora_unet_single_blocks_\d+_(linear1|linear2)", m)}
    assert (len(double), len(single), len(modules)) == (19 * 8, 38 * 2, 228)  # Chroma's full 19 + 38 blocks


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_lumina2_trains_through_the_kohya_backend(tmp_path: Path, kohya: Any, builder: Path) -> None:
    from orchestrator.tiny import tiny_lumina2_kohya

    events, lora = train(tmp_path, tiny_lumina2_kohya(builder), 3, gemma2_max_token_length=32)
    metadata = check_run(events, lora, "lumina2", 3)
    assert metadata["ss_network_module"] == "networks.lora_lumina"
    modules = modules_of(lora)
    layers = {m for m in modules if m.startswith("lora_unet_layers_")}
    assert len(layers) == 26 * 6 and len(modules) == 180  # 26 layers x 6, the refiners, the final layer


def test_the_shipped_option_lists_match_the_checkout(
    tmp_path: Path, kohya: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What loraforge assumes each family script accepts (when setup could not ask) is what the checkout's own
    argument parsers say."""
    from backends.kohya import env as kohya_env
    from backends.kohya.families import families
    from backends.kohya.options import script_options, sd_scripts_options

    monkeypatch.setenv("LORAFORGE_HOME", str(tmp_path / "home"))
    kohya_env.dump_options(kohya)
    dump = json.loads(kohya_env.options_dump(kohya.root).read_text())
    for spec in families().values():
        shipped = set(sd_scripts_options()) | set(script_options().get(spec.script, {}))
        assert set(dump[spec.script]) - {"help"} == shipped, spec.script
