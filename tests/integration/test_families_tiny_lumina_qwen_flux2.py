"""Lumina Image 2.0, Qwen-Image and FLUX.2 on tiny random models built here (orchestrator/tiny/*_script.py).

- Each tiny model loads in diffusers and renders a 64x64 image.
- SimpleTuner 4.10.1 trains each for 3 steps on CPU (its own command line and config files, a checkpoint at step 2),
  and the LoRA loads in diffusers (load_lora_weights) and changes the image. A 3-step LoRA's up weights are ~3e-4, so
  the image is also rendered with them scaled x1000, which must move it clearly.
- sd-scripts' Lumina 2 layout (lora_unet_*): diffusers' Lumina2 loader does not read it and loads nothing without an
  error; converted to diffusers' PEFT names it loads and applies. Shown on the tiny model with a LoRA of sd-scripts'
  module set and shapes, so it runs in seconds.
- sd-scripts' lumina_train_network.py on the model it can load (full-size Next-DiT and Gemma 2: ~15 GB to build,
  3.5-6 min and ~6.5 GB of RAM to train 3 steps on 2 cores): marked slow.

sd-scripts (48d368fa) has no Qwen-Image or FLUX.2 trainer, so those two run on SimpleTuner only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from orchestrator.lora.convert import make_scalar, scalar
from orchestrator.lora.safetensors_io import Tensor, read, read_header, write
from orchestrator.tiny import dataset, tiny_flux2, tiny_lumina2, tiny_lumina2_kohya, tiny_qwen_image
from tests.conftest import usable_env

# slow: the families' runs through loraforge (test_simpletuner_families_train, test_kohya_families_train) use these models in the default run; this checks the builders and the trainers' own command lines
pytestmark = [pytest.mark.integration, pytest.mark.slow]

SD_SCRIPTS = Path(__file__).resolve().parents[2] / "third_party" / "sd-scripts"
BUILDERS = {"lumina2": tiny_lumina2, "qwen_image": tiny_qwen_image, "flux2": tiny_flux2}
# What SimpleTuner needs beyond model_family for each tiny model (the flavour the tiny model is shaped like)
FLAVOURS = {"lumina2": {}, "qwen_image": {"model_flavour": "v1.0"}, "flux2": {"model_flavour": "dev"}}

# Renders one image with and without a LoRA (and with its up weights scaled) in a Python that has diffusers + peft.
RENDER = r"""
import json, sys, tempfile
from pathlib import Path
import numpy as np, torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file, save_file

args = json.loads(sys.argv[1])
pipe = DiffusionPipeline.from_pretrained(args["model"], torch_dtype=getattr(torch, args.get("dtype", "float32")))
pipe.set_progress_bar_config(disable=True)

def render():
    kw = {"true_cfg_scale": 1.0} if type(pipe).__name__.startswith("QwenImage") else {"guidance_scale": 1.0}
    image = pipe(prompt="photo of ohwx", num_inference_steps=2, height=64, width=64, output_type="np",
                 generator=torch.Generator("cpu").manual_seed(7), **kw).images[0]
    return np.asarray(image, dtype=np.float64) * 255

base = render()
out = {"pipeline": type(pipe).__name__, "shape": list(base.shape), "finite": bool(np.isfinite(base).all())}
if args.get("lora"):
    lora = Path(args["lora"])
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="raw")
    out["adapters"] = pipe.get_list_adapters()
    out["raw_change"] = float(np.abs(render() - base).mean())
    pipe.delete_adapters("raw")
    weights = load_file(str(lora))
    scaled = {k: v * 1000 if ("lora_B" in k or "lora_up" in k) else v for k, v in weights.items()}
    tmp = Path(tempfile.mkdtemp()) / "scaled.safetensors"
    save_file(scaled, str(tmp))
    pipe.load_lora_weights(str(tmp.parent), weight_name=tmp.name, adapter_name="scaled")
    out["scaled_change"] = float(np.abs(render() - base).mean())
print(json.dumps(out))
"""


@pytest.fixture
def st_python(backend_home: dict) -> Path:
    return Path(usable_env(backend_home, "simpletuner").python)


def hub_cache_env(family: str, model: Path) -> dict[str, str]:
    """FLUX.2-dev's Mistral-3 is found only by hub id (see flux2_script.py): its hub cache is inside the model."""
    return {"HF_HUB_CACHE": str(model / "hf-cache")} if family == "flux2" else {}


def render(python: Path, model: Path, tmp: Path, **args: object) -> dict:
    script = tmp / "render.py"
    script.write_text(RENDER)
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [str(python), str(script), json.dumps({"model": str(model), **args})],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def training_data(folder: Path) -> Path:
    """Six captioned 128 px shapes, the trigger first."""
    dataset.make_dataset(folder, count=6, size=128)
    for caption in folder.glob("*.txt"):
        caption.write_text("ohwx, " + caption.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def simpletuner_config(job: Path, model: Path, family: str) -> Path:
    """config.json + multidatabackend.json for 3 CPU steps at 64 px with a checkpoint at step 2
    (reference/simpletuner-cpu.md: optimi-adamw, on-demand VAE cache, no validation)."""
    config = {
        "model_family": family,
        **FLAVOURS[family],
        "model_type": "lora",
        "lora_type": "standard",
        "lora_rank": 4,
        "pretrained_model_name_or_path": str(model),
        "pretrained_vae_model_name_or_path": str(model),
        "data_backend_config": str(job / "multidatabackend.json"),
        "output_dir": str(job / "output"),
        "max_train_steps": 3,
        "num_train_epochs": 0,
        "checkpoint_step_interval": 2,
        "learning_rate": 1e-4,
        "lr_scheduler": "constant",
        "optimizer": "optimi-adamw",
        "mixed_precision": "no",
        "base_model_precision": "no_change",
        "train_batch_size": 1,
        "resolution": 64,
        "resolution_type": "pixel",
        "seed": 42,
        "report_to": "none",
        "validation_disable": True,
        "disable_benchmark": True,
    }
    backends = [
        {
            "id": "tiny",
            "type": "local",
            "instance_data_dir": str(training_data(job / "data")),
            "caption_strategy": "textfile",
            "resolution": 64,
            "resolution_type": "pixel",
            "minimum_image_size": 64,
            "cache_dir_vae": str(job / "cache" / "vae"),
            "vae_cache_ondemand": True,
        },
        {"id": "text", "dataset_type": "text_embeds", "default": True, "type": "local", "cache_dir": str(job / "te")},
    ]
    (job / "multidatabackend.json").write_text(json.dumps(backends))
    (job / "config.json").write_text(json.dumps(config))
    return job / "config.json"


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_tiny_model_renders_in_diffusers(family: str, st_python: Path, tmp_path: Path) -> None:
    model = BUILDERS[family](st_python)
    shown = render(st_python, model, tmp_path)
    expected = {"lumina2": "Lumina2Pipeline", "qwen_image": "QwenImagePipeline", "flux2": "Flux2Pipeline"}[family]
    assert shown == {"pipeline": expected, "shape": [64, 64, 3], "finite": True}


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_simpletuner_trains_a_lora_that_changes_the_image(family: str, st_python: Path, tmp_path: Path) -> None:
    model = BUILDERS[family](st_python)
    config = simpletuner_config(tmp_path, model, family)
    env = os.environ | {"CONFIG_BACKEND": "json", "CONFIG_PATH": str(config), "HF_HUB_OFFLINE": "1"}
    env |= {"SIMPLETUNER_DISABLE_COLORS": "1"} | hub_cache_env(family, model)
    result = subprocess.run(
        [str(st_python), "-m", "simpletuner.train"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lora = tmp_path / "output" / "pytorch_lora_weights.safetensors"
    assert (tmp_path / "output" / "checkpoint-2" / "pytorch_lora_weights.safetensors").is_file()
    keys = list(read_header(lora)[0])
    assert keys and all(re.fullmatch(r"transformer\..+\.lora_[AB]\.weight", k) for k in keys), keys[:5]
    shown = render(st_python, model, tmp_path, lora=str(lora))
    assert shown["adapters"] == {"transformer": ["raw"]}
    assert 0 < shown["raw_change"] < shown["scaled_change"] and shown["scaled_change"] > 0.1, shown


# sd-scripts' networks/lora_lumina.py module names -> Lumina2Transformer2DModel's; its qkv is one Linear that diffusers
# splits into to_q / to_k / to_v (by rows: q = heads x head dim, k = v = kv heads x head dim)
KOHYA_LUMINA2 = [
    (r"(layers|noise_refiner|context_refiner)_(\d+)_attention_qkv", r"\1.\2.attn.QKV"),
    (r"(layers|noise_refiner|context_refiner)_(\d+)_attention_out", r"\1.\2.attn.to_out.0"),
    (r"(layers|noise_refiner|context_refiner)_(\d+)_feed_forward_w(\d)", r"\1.\2.feed_forward.linear_\3"),
    (r"(layers|noise_refiner)_(\d+)_adaLN_modulation_1", r"\1.\2.norm1.linear"),
    (r"final_layer_adaLN_modulation_1", "norm_out.linear_1"),
    (r"final_layer_linear", "norm_out.linear_2"),
]


def kohya_lumina2_to_diffusers(tensors: dict[str, Tensor], q_rows: int, kv_rows: int) -> dict[str, Tensor]:
    """lora_unet_* (down, up, alpha) -> transformer.* lora_A / lora_B, alpha / rank folded into lora_B."""
    out: dict[str, Tensor] = {}
    for key in sorted(k for k in tensors if k.endswith(".lora_down.weight")):
        module = key.removesuffix(".lora_down.weight")
        name = module.removeprefix("lora_unet_")
        target = next(re.sub(p, r, name) for p, r in KOHYA_LUMINA2 if re.fullmatch(p, name))
        down, up = tensors[key], tensors[f"{module}.lora_up.weight"]
        rank = down.shape[0]
        factor = scalar(tensors[f"{module}.alpha"]) / rank if f"{module}.alpha" in tensors else 1.0
        up_array = np.frombuffer(up.data, "<f4").reshape(up.shape) * np.float32(factor)
        parts = {"to_q": up_array[:q_rows], "to_k": up_array[q_rows : q_rows + kv_rows]}
        parts["to_v"] = up_array[q_rows + kv_rows :]
        for suffix, rows in parts.items() if target.endswith("QKV") else [("", up_array)]:
            prefix = f"transformer.{target.removesuffix('QKV')}{suffix}"
            out[f"{prefix}.lora_A.weight"] = down
            out[f"{prefix}.lora_B.weight"] = Tensor("F32", list(rows.shape), np.ascontiguousarray(rows).tobytes())
    return out


def kohya_lumina2_lora(model: Path, out: Path) -> tuple[Path, int, int]:
    """A LoRA in sd-scripts' Lumina 2 layout for this model's shapes: every module lora_lumina trains by default
    (attention qkv/out, feed-forward, modulation, final layer), rank 4, alpha 2, random non-zero weights."""
    config = json.loads((model / "transformer" / "config.json").read_text())
    head = config["hidden_size"] // config["num_attention_heads"]
    q_rows, kv_rows = config["num_attention_heads"] * head, config["num_kv_heads"] * head
    header = read_header(model / "transformer" / "diffusion_pytorch_model.safetensors")[0]

    def in_out(name: str) -> tuple[int, int]:
        n_out, n_in = header[f"{name}.weight"]["shape"]
        return n_in, n_out

    modules: dict[str, tuple[int, int]] = {}  # kohya module -> (in, out)
    for block in ("layers", "noise_refiner", "context_refiner"):
        for i in range(config["num_layers" if block == "layers" else "num_refiner_layers"]):
            at = f"{block}.{i}"
            modules[f"{block}_{i}_attention_qkv"] = (in_out(f"{at}.attn.to_q")[0], q_rows + 2 * kv_rows)
            modules[f"{block}_{i}_attention_out"] = in_out(f"{at}.attn.to_out.0")
            for w in (1, 2, 3):
                modules[f"{block}_{i}_feed_forward_w{w}"] = in_out(f"{at}.feed_forward.linear_{w}")
            if block != "context_refiner":  # the context refiner has no modulation
                modules[f"{block}_{i}_adaLN_modulation_1"] = in_out(f"{at}.norm1.linear")
    modules["final_layer_adaLN_modulation_1"] = in_out("norm_out.linear_1")
    modules["final_layer_linear"] = in_out("norm_out.linear_2")
    rng = np.random.default_rng(0)
    tensors: dict[str, Tensor] = {}
    for module, (n_in, n_out) in modules.items():
        down = (rng.standard_normal((4, n_in)) * 0.3).astype("<f4")
        up = (rng.standard_normal((n_out, 4)) * 0.3).astype("<f4")
        tensors[f"lora_unet_{module}.lora_down.weight"] = Tensor("F32", [4, n_in], down.tobytes())
        tensors[f"lora_unet_{module}.lora_up.weight"] = Tensor("F32", [n_out, 4], up.tobytes())
        tensors[f"lora_unet_{module}.alpha"] = make_scalar(2.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out, tensors, {"ss_network_module": "networks.lora_lumina", "ss_base_model_version": "lumina2"})
    return out, q_rows, kv_rows


def test_diffusers_ignores_the_kohya_lumina2_layout_and_reads_it_converted(st_python: Path, tmp_path: Path) -> None:
    model = tiny_lumina2(st_python)
    kohya, q_rows, kv_rows = kohya_lumina2_lora(model, tmp_path / "kohya" / "lora.safetensors")
    raw = render(st_python, model, tmp_path, lora=str(kohya))
    # diffusers 0.42 reads only "diffusion_model."-prefixed Lumina 2 LoRAs; lora_unet_* keys load no adapter at all
    assert raw["adapters"] == {} and raw["raw_change"] == 0.0, raw
    converted = kohya_lumina2_to_diffusers(read(kohya)[0], q_rows, kv_rows)
    (tmp_path / "diffusers").mkdir()
    target = write(tmp_path / "diffusers" / "lora.safetensors", converted, {})
    shown = render(st_python, model, tmp_path, lora=str(target))
    assert shown["adapters"] == {"transformer": ["raw"]} and shown["raw_change"] > 1.0, shown


@pytest.mark.slow
def test_sd_scripts_trains_lumina2_on_its_full_geometry(backend_home: dict, st_python: Path, tmp_path: Path) -> None:
    kohya_env = usable_env(backend_home, "kohya")
    model = tiny_lumina2_kohya(st_python)
    files = model / "kohya"
    (tmp_path / "dataset.toml").write_text(
        '[general]\ncaption_extension = ".txt"\n\n[[datasets]]\nresolution = 64\nbatch_size = 1\n'
        f"enable_bucket = false\n\n[[datasets.subsets]]\nimage_dir = {json.dumps(str(training_data(tmp_path / 'data')))}\n"
    )
    (tmp_path / "accelerate.yaml").write_text(
        'compute_environment: LOCAL_MACHINE\ndistributed_type: "NO"\nnum_processes: 1\nnum_machines: 1\n'
        'mixed_precision: "no"\nuse_cpu: true\ndynamo_config: {}\n'
    )
    options = {
        "pretrained_model_name_or_path": str(files / "lumina2.safetensors"),
        "gemma2": str(files / "gemma2.safetensors"),
        "ae": str(files / "ae.safetensors"),
        "tokenizer_cache_dir": str(files / "tokenizer_cache"),
        "dataset_config": str(tmp_path / "dataset.toml"),
        "output_dir": str(tmp_path / "output"),
        "output_name": "lumina2_lora",
        "save_model_as": "safetensors",
        "network_module": "networks.lora_lumina",
        "network_dim": 4,
        "network_alpha": 1,
        "network_train_unet_only": True,
        "learning_rate": 1e-4,
        "optimizer_type": "AdamW",
        "lr_scheduler": "constant",
        "max_train_steps": 3,
        "save_every_n_steps": 2,
        "mixed_precision": "bf16",  # fp32 weights would need ~21 GB of RAM (two 2.6 B models)
        "save_precision": "bf16",
        "seed": 42,
        "max_data_loader_n_workers": 0,
        "timestep_sampling": "nextdit_shift",
        "discrete_flow_shift": 6.0,
        "model_prediction_type": "raw",
        "system_prompt": "You are an assistant designed to generate high-quality images based on user prompts.",
        "gemma2_max_token_length": 32,
        "cache_latents": True,
        "cache_text_encoder_outputs": True,
    }
    lines = [f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}" for k, v in options.items()]
    (tmp_path / "config.toml").write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [str(kohya_env.python), "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "accelerate.yaml")]
        + ["lumina_train_network.py", "--config_file", str(tmp_path / "config.toml")],
        cwd=kohya_env.root or SD_SCRIPTS,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "saving checkpoint:" in result.stdout
    assert (tmp_path / "output" / "lumina2_lora-step00000002.safetensors").is_file()
    tensors, metadata = read(tmp_path / "output" / "lumina2_lora.safetensors")
    modules = {k.split(".")[0] for k in tensors}
    assert len(modules) == 180 and all(m.startswith("lora_unet_") for m in modules)  # 26 layers x 6 + refiners + final
    assert metadata["ss_network_module"] == "networks.lora_lumina"
    assert metadata["modelspec.architecture"] == "lumina-2/lora"
