"""A Kohya-layout Flux LoRA and its diffusers conversion both load with diffusers' load_lora_weights on a tiny random
Flux pipeline, change the image against the base model, and give the same image: diffusers' own reading of the
Kohya file (which bakes alpha into the weights) and our conversion (alpha in PEFT's metadata) apply the same delta.

diffusers' own Kohya-Flux reader (0.42) has limits our conversion does not: it splits linear1 at FLUX.1's fixed sizes
(3 x 3072 + 12288), so on a tiny model it fails on linear1; it renames lora_te1_ modules into a key style its text
encoder loader then rejects ("Could not automatically infer state dict type"); and it drops guidance_in and
final_layer modules without a word (their names lose the "transformer." prefix). So the image comparison uses a
Kohya file of double and single block modules without linear1; the converted file with all of them is shown to load
and to move the image further.

Runs sample_worker.py in a Python that has diffusers and peft (a registered backend venv, as `loraforge sample`
does); skipped where there is none. The tiny model is built locally (orchestrator/tiny/flux_script.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.lora.convert import convert, make_scalar
from orchestrator.lora.inspect import describe
from orchestrator.lora.safetensors_io import Tensor, read, write
from orchestrator.lora.sample import WORKER

pytestmark = pytest.mark.integration

FLUX_SCRIPT = Path(__file__).resolve().parents[2] / "orchestrator" / "tiny" / "flux_script.py"


@pytest.fixture
def flux_python(real_registry: Path) -> Path:
    """The Python `loraforge sample` would use, from the machine's backend registry; it must have peft too."""
    from orchestrator.errors import LoraforgeError
    from orchestrator.lora.sample import diffusers_python

    try:
        python = diffusers_python()
    except LoraforgeError:
        pytest.skip("needs a Python with diffusers and peft: run `loraforge setup simpletuner`")
    check = subprocess.run([str(python), "-c", "import diffusers, peft"], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"{python} lacks diffusers or peft (FluxPipeline LoRA loading needs both)")
    return python


def kohya_lora(model: Path, out: Path, *, diffusers_readable: bool = False) -> Path:
    """sd-scripts' Flux layout for this model's shapes: every double and single block module, guidance_in, the final
    layer's modulation (rows swapped against diffusers) and one CLIP-L projection; rank 4, alpha 2 except single
    block 1's linear1 and linear2 at alpha 8. Random non-zero up weights, large enough to move a random model's image."""
    config = json.loads((model / "transformer" / "config.json").read_text())
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    mlp = 4 * hidden  # FluxTransformer2DModel's fixed MLP ratio
    clip = json.loads((model / "text_encoder" / "config.json").read_text())["hidden_size"]
    shapes = {}
    for b in range(config["num_layers"]):
        for side in ("img", "txt"):
            shapes |= {
                f"double_blocks_{b}_{side}_attn_qkv": (hidden, 3 * hidden),
                f"double_blocks_{b}_{side}_attn_proj": (hidden, hidden),
                f"double_blocks_{b}_{side}_mlp_0": (hidden, mlp),
                f"double_blocks_{b}_{side}_mlp_2": (mlp, hidden),
                f"double_blocks_{b}_{side}_mod_lin": (hidden, 6 * hidden),
            }
    for b in range(config["num_single_layers"]):
        shapes |= {
            f"single_blocks_{b}_linear2": (hidden + mlp, hidden),
            f"single_blocks_{b}_modulation_lin": (hidden, 3 * hidden),
        }
        if not diffusers_readable:
            shapes[f"single_blocks_{b}_linear1"] = (hidden, 3 * hidden + mlp)
    if not diffusers_readable:
        shapes |= {"guidance_in_in_layer": (256, hidden), "final_layer_adaLN_modulation_1": (hidden, 2 * hidden)}
    modules = {f"lora_unet_{name}": s for name, s in shapes.items()}
    if not diffusers_readable:
        modules["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"] = (clip, clip)
    rng = np.random.default_rng(0)
    tensors = {}
    for module, (n_in, n_out) in modules.items():
        down = rng.standard_normal((4, n_in)).astype("<f4") * 0.3
        up = rng.standard_normal((n_out, 4)).astype("<f4") * 0.3
        tensors[f"{module}.lora_down.weight"] = Tensor("F32", [4, n_in], down.tobytes())
        tensors[f"{module}.lora_up.weight"] = Tensor("F32", [n_out, 4], up.tobytes())
        tensors[f"{module}.alpha"] = make_scalar(8.0 if "single_blocks_1_linear" in module else 2.0)
    return write(out, tensors, {"ss_network_module": "networks.lora_flux", "ss_base_model_version": "flux1"})


def render(python: Path, model: Path, lora: Path, out_dir: Path) -> tuple[np.ndarray, float]:
    """One image through sample_worker (the `loraforge sample` path: load_lora_weights, then the adapter at weight 1)
    and its mean pixel change against the same seed without the LoRA."""
    args = {"base_model": str(model), "lora": str(lora), "prompts": ["photo of ohwx"], "seeds": [7]}
    args |= {"out_dir": str(out_dir), "steps": 2, "size": 64, "scale": 1.0, "guidance": 3.5}
    result = subprocess.run([str(python), str(WORKER), json.dumps(args)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    return np.asarray(Image.open(line["path"]), dtype=np.int16), float(line["pixel_change"])


def test_kohya_and_converted_flux_loras_load_in_diffusers_and_give_the_same_image(
    flux_python: Path, tmp_path: Path
) -> None:
    model = tmp_path / "tiny-flux"
    built = subprocess.run(
        [str(flux_python), str(FLUX_SCRIPT), str(model)], capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr[-3000:]
    full = kohya_lora(model, tmp_path / "kohya-full.safetensors")
    converted_full = convert(full, tmp_path / "diffusers-full.safetensors", "diffusers")
    assert (describe(full)["family"], describe(converted_full)["family"]) == ("flux", "flux")
    back = convert(converted_full, tmp_path / "kohya-again.safetensors", "kohya")
    assert {k: t.data for k, t in read(back)[0].items()} == {k: t.data for k, t in read(full)[0].items()}

    kohya = kohya_lora(model, tmp_path / "kohya.safetensors", diffusers_readable=True)
    diffusers = convert(kohya, tmp_path / "diffusers.safetensors", "diffusers")
    from_kohya, change_kohya = render(flux_python, model, kohya, tmp_path / "k")
    from_diffusers, change_diffusers = render(flux_python, model, diffusers, tmp_path / "d")
    assert change_kohya > 0.01 and change_diffusers > 0.01, (change_kohya, change_diffusers)
    # the same delta applied: equal 8-bit images, up to one level where float noise crosses a rounding edge
    assert np.abs(from_kohya - from_diffusers).max() <= 1, np.abs(from_kohya - from_diffusers).max()

    # linear1, the embedders, the final layer and the CLIP module load from our file and apply: the image moves
    from_full, change_full = render(flux_python, model, converted_full, tmp_path / "f")
    assert change_full > 0.01 and np.abs(from_full - from_diffusers).mean() > 1, change_full
