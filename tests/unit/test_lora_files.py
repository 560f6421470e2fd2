"""LoRA files without torch: layouts, exact conversion both ways, inspection, clear errors, atomic writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from orchestrator.errors import LoraforgeError
from orchestrator.job import build_job
from orchestrator.lora import keys as K
from orchestrator.lora.convert import convert, make_scalar
from orchestrator.lora.finalize import finalize_lora
from orchestrator.lora.inspect import describe
from orchestrator.lora.safetensors_io import Tensor, read, write


def f32(*shape: int, seed: int = 0) -> Tensor:
    return Tensor("F32", list(shape), np.random.default_rng(seed).standard_normal(shape).astype("<f4").tobytes())


def kohya_sdxl(path: Path) -> Path:
    """sd-scripts' SDXL naming (SGM blocks), two text encoders, one module with its own alpha."""
    tensors = {}
    modules = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": 4.0,
        "lora_unet_middle_block_1_proj_in": 4.0,
        "lora_unet_output_blocks_2_1_transformer_blocks_0_ff_net_0_proj": 2.0,
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": 4.0,
        "lora_te2_text_model_encoder_layers_1_mlp_fc1": 4.0,
    }
    for i, (module, alpha) in enumerate(modules.items()):
        tensors[f"{module}.lora_down.weight"] = f32(8, 16, seed=i)
        tensors[f"{module}.lora_up.weight"] = f32(16, 8, seed=100 + i)
        tensors[f"{module}.alpha"] = make_scalar(alpha)
    return write(path, tensors, {"ss_network_dim": "8", "modelspec.architecture": "stable-diffusion-xl-v1-base/lora"})


def test_sgm_and_underscored_names_map_to_diffusers_modules() -> None:
    assert K.kohya_module_to_diffusers("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q") == (
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    )
    assert K.kohya_module_to_diffusers("lora_unet_output_blocks_2_1_transformer_blocks_0_ff_net_0_proj") == (
        "unet.up_blocks.0.attentions.2.transformer_blocks.0.ff.net.0.proj"
    )
    assert (
        K.kohya_module_to_diffusers("lora_unet_down_blocks_0_attentions_1_proj_in")
        == "unet.down_blocks.0.attentions.1.proj_in"
    )
    assert K.kohya_module_to_diffusers("lora_unet_input_blocks_1_0_in_layers_2") == "unet.down_blocks.0.resnets.0.conv1"
    assert K.kohya_module_to_diffusers("lora_te2_text_model_encoder_layers_1_mlp_fc1") == (
        "text_encoder_2.text_model.encoder.layers.1.mlp.fc1"
    )


def test_kohya_to_diffusers_and_back_copies_every_weight_exactly(tmp_path: Path) -> None:
    source = kohya_sdxl(tmp_path / "k.safetensors")
    diffusers = convert(source, tmp_path / "d.safetensors", "diffusers")
    back = convert(diffusers, tmp_path / "k2.safetensors", "kohya")
    again = convert(back, tmp_path / "d2.safetensors", "diffusers")
    d1, m1 = read(diffusers)
    d2, _ = read(again)
    assert {k: (t.dtype, t.shape, t.data) for k, t in d1.items()} == {
        k: (t.dtype, t.shape, t.data) for k, t in d2.items()
    }
    assert "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in d1
    peft = json.loads(m1["lora_adapter_metadata"])
    assert peft["unet.r"] == 8 and peft["unet.lora_alpha"] == 4.0
    assert peft["unet.alpha_pattern"] == {"up_blocks.0.attentions.2.transformer_blocks.0.ff.net.0.proj": 2.0}
    k1, _ = read(source)
    k2, _ = read(back)
    weights = sorted(t.data for k, t in k1.items() if not k.endswith(".alpha"))
    assert weights == sorted(t.data for k, t in k2.items() if not k.endswith(".alpha"))
    assert sorted(describe(back)["dtypes"]) == ["F32"] and describe(back)["alpha"] == 4.0


def test_inspect_reports_rank_alpha_family_and_metadata(tmp_path: Path) -> None:
    info = describe(kohya_sdxl(tmp_path / "k.safetensors"))
    assert (info["layout"], info["family"], info["rank"], info["alpha"], info["modules"]) == (
        "kohya",
        "sdxl",
        8,
        4.0,
        5,
    )
    assert info["text_encoder"] and info["metadata"]["ss_network_dim"] == "8"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "too short"),
        (b"this is a text file, not a model", "not a valid .safetensors file"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......", "not JSON"),
    ],
)
def test_malformed_files_give_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    for action in (lambda: describe(path), lambda: convert(path, tmp_path / "out.safetensors", "kohya")):
        with pytest.raises(LoraforgeError, match=message):
            action()
    assert not (tmp_path / "out.safetensors").exists()


def test_a_model_that_is_not_a_lora_is_named_as_such(tmp_path: Path) -> None:
    path = write(tmp_path / "model.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": f32(4, 4)}, {})
    with pytest.raises(LoraforgeError, match="not a LoRA"):
        describe(path)
    with pytest.raises(LoraforgeError, match="no LoRA weights"):
        convert(path, tmp_path / "out.safetensors", "diffusers")


def test_a_writer_killed_mid_write_leaves_no_file_under_the_final_name(tmp_path: Path) -> None:
    target = tmp_path / "big.safetensors"
    code = (
        "import sys\nfrom pathlib import Path\nfrom orchestrator.lora.safetensors_io import Tensor, write\n"
        "big = {f't{i}': Tensor('F32', [4, 1024, 1024], bytes(16 * 1024 * 1024)) for i in range(64)}\n"
        f"write(Path({str(target)!r}), big, {{}})\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".big.safetensors.*.partial")) and time.monotonic() < deadline:
        assert child.poll() is None, "the writer ended before its temp file appeared"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not target.exists()


def test_finalize_keeps_backend_metadata_adds_ours_and_converts(tmp_path: Path) -> None:
    from PIL import Image

    from orchestrator.dataset.model import load_dataset
    from orchestrator.envs import BackendEnv
    from orchestrator.lora.finalize import loraforge_metadata
    from orchestrator.steps import apply_step_plan

    (tmp_path / "data").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "data" / "a.png")
    (tmp_path / "data" / "a.txt").write_text("ohwx person")
    job = build_job(
        {
            "name": "me",
            "base_model": str(tmp_path / "models" / "my-private-folder" / "sdxl.safetensors"),
            "family": "sdxl",
            "dataset": str(tmp_path / "data"),
            "trigger": "ohwx person",
            "training": {"steps": 7},
            "saving": {"format": "diffusers"},
        }
    )
    env = BackendEnv("kohya", Path("/py"), versions={"sd-scripts": "48d368fa5577"})
    dataset = load_dataset(tmp_path / "data")
    job, plan = apply_step_plan(job, dataset.sizes(), "kohya")
    metadata = loraforge_metadata(job, "kohya", env, dataset, plan)
    out = finalize_lora(job, kohya_sdxl(tmp_path / "raw.safetensors"), tmp_path / "me.safetensors", metadata)
    info = describe(out)
    assert info["layout"] == "diffusers" and info["trigger"] == "ohwx person"
    meta = info["metadata"]
    assert meta["ss_network_dim"] == "8"  # the backend's own
    assert meta["loraforge_backend"] == "kohya" and meta["loraforge_backend_version"] == "48d368fa5577"
    assert meta["loraforge_steps"] == "7" and meta["loraforge_dataset_images"] == "1"
    assert meta["loraforge_base_model"] == "sdxl.safetensors"  # a file name: no folder of this machine
    assert str(tmp_path) not in out.read_bytes().decode("latin-1")
