"""The tiny SD3.5 and Chroma models (orchestrator/tiny/sd3_script.py, chroma_script.py): both layouts come from the
same weights, diffusers loads and renders the folder, sd-scripts' own loaders load every tensor of the single files
(and SD3's full-size CLIP files encode exactly what the folder's small encoders do), SimpleTuner trains each family
for a few steps from its own command line, and every LoRA layout loads in diffusers and changes the image.

What diffusers reads as it is: SimpleTuner's PEFT files (both families) and sd-scripts' Chroma file (ChromaPipeline
uses diffusers' Kohya-Flux reader). sd-scripts' SD3 file (lora_unet_joint_blocks_*) is silently ignored by
SD3's load_lora_weights; `loraforge convert --to diffusers` (orchestrator/lora/sd3.py) is the conversion it needs
(fused qkv split into to_q/k/v with the down matrix shared, the last block's context modulation rows swapped, alpha
in PEFT's metadata).

Needs the SimpleTuner env (diffusers, peft) and, for the sd-scripts checks, the kohya env; skipped where absent.
sd-scripts' own runs (minutes, 11-17 GB of mapped weights) are fixtures under tests/fixtures/kohya/{sd3,chroma}.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import usable_env

from orchestrator.lora.convert import convert, make_scalar
from orchestrator.lora.safetensors_io import Tensor, read, write

# slow: the families' runs through loraforge (test_simpletuner_families_train, test_kohya_families_train) use these models in the default run; this checks the builders and the trainers' own command lines
pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

# Runs in the SimpleTuner venv: renders one fixed-seed image, then (with a LoRA) the same image with it; the LoRA's
# up weights can be replaced by random ones (a few steps leave them near zero) to show the layout is applied.
DIFFUSERS_WORKER = r"""
import json, sys
import numpy as np, torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file, save_file

args = json.loads(sys.argv[1])
pipe = DiffusionPipeline.from_pretrained(args["model"], torch_dtype=torch.float32)
kw = dict(num_inference_steps=2, height=64, width=64, output_type="np", max_sequence_length=32)


def render():
    return pipe("ohwx, a red circle", generator=torch.Generator().manual_seed(7), **kw).images[0]


before = render()
out = {"std": float(before.std()), "pipeline": type(pipe).__name__}
if args.get("lora"):
    lora = args["lora"]
    if args.get("perturb"):
        state = load_file(lora)
        g = torch.Generator().manual_seed(0)
        for k, t in state.items():
            if "lora_B" in k or "lora_up" in k:
                state[k] = torch.randn(t.shape, generator=g) * 0.5
        lora = args["out"]
        save_file(state, lora)
    pipe.load_lora_weights(lora, adapter_name="x")
    wrapped = [n for n, m in pipe.transformer.named_modules() if hasattr(m, "lora_A") and "x" in m.lora_A]
    out |= {"modules": len(wrapped), "pixel_change": float(np.abs(render() - before).mean() * 255)}
if args.get("encode"):  # SD3's CLIP outputs as the pipeline's encoders give them, against sd-scripts' (a .pt file)
    outs = []
    with torch.no_grad():
        for tok, enc in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
            t = tok([args["encode"]], padding="max_length", max_length=77, return_tensors="pt").input_ids
            o = enc(t, output_hidden_states=True)
            outs.append((o.hidden_states[-2], o[0]))
    theirs = torch.load(args["compare"])
    ours = {"lg_out": torch.cat([outs[0][0], outs[1][0]], -1), "pooled": torch.cat([outs[0][1], outs[1][1]], -1)}
    out["max_diff"] = {k: float((ours[k] - theirs[k]).abs().max()) for k in ours}
    out["scale"] = {k: float(ours[k].abs().max()) for k in ours}
print(json.dumps(out))
"""

# Runs in the kohya venv with sd-scripts as the working folder: its own loaders on the kohya/ files. They load into
# empty (meta) modules with strict=False, so "<All keys matched successfully>" is what says every tensor is there.
KOHYA_WORKER = r"""
import json, sys
sys.path.insert(0, ".")
import torch
args = json.loads(sys.argv[1])
k = args["model"] + "/kohya"
report = {}
if args["family"] == "sd3":
    from library import sd3_utils, strategy_sd3
    from library.safetensors_utils import load_safetensors
    sd = load_safetensors(k + "/sd3.safetensors", "cpu", dtype=torch.bfloat16)
    mmdit = sd3_utils.load_mmdit(sd, torch.bfloat16, "cpu")
    report["model_type"] = mmdit.model_type
    l = sd3_utils.load_clip_l(k + "/clip_l.safetensors", torch.bfloat16, "cpu", state_dict={}).eval()
    g = sd3_utils.load_clip_g(k + "/clip_g.safetensors", torch.bfloat16, "cpu", state_dict={}).eval()
    t5 = sd3_utils.load_t5xxl(k + "/t5xxl.safetensors", torch.bfloat16, "cpu", state_dict={})  # mapped, not run
    sd3_utils.load_vae(k + "/vae.safetensors", torch.bfloat16, "cpu", state_dict={})
    report["t5_params"] = sum(p.numel() for p in t5.parameters())
    tok = strategy_sd3.Sd3TokenizeStrategy(32, k + "/tokenizers")
    tokens = tok.tokenize([args["encode"]])
    with torch.no_grad():
        lg_out, _, pooled, *_ = strategy_sd3.Sd3TextEncodingStrategy().encode_tokens(tok, [l, g, None], tokens)
    torch.save({"lg_out": lg_out.float(), "pooled": pooled.float()}, args["encoded"])
else:
    from library import flux_utils, strategy_flux
    _, model = flux_utils.load_flow_model(k + "/chroma.safetensors", torch.bfloat16, "cpu", model_type="chroma")
    flux_utils.load_ae(k + "/ae.safetensors", torch.bfloat16, "cpu")
    t5 = flux_utils.load_t5xxl(k + "/t5xxl.safetensors", torch.bfloat16, "cpu")
    strategy_flux.FluxTokenizeStrategy(32, k + "/tokenizers")
    report["params"] = sum(p.numel() for p in model.parameters())
    report["blocks"] = [len(model.double_blocks), len(model.single_blocks)]
print(json.dumps(report))
"""


@pytest.fixture
def st(backend_home: dict):  # type: ignore[no-untyped-def]
    env = usable_env(backend_home, "simpletuner")
    check = subprocess.run([str(env.python), "-c", "import diffusers, peft"], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"{env.python} lacks diffusers or peft: run `loraforge setup simpletuner`")
    return env


@pytest.fixture
def sd3_model(st) -> Path:  # type: ignore[no-untyped-def]
    from orchestrator.tiny import tiny_sd3

    return tiny_sd3(st.python)  # cached in the machine's tiny-model cache


@pytest.fixture
def chroma_model(st) -> Path:  # type: ignore[no-untyped-def]
    from orchestrator.tiny import tiny_chroma

    return tiny_chroma(st.python)


def run_json(argv: list[str], *, cwd: Path | None = None, timeout: int = 600) -> dict:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("{")]
    return json.loads(line)


def diffusers_worker(st, tmp_path: Path, **args: object) -> dict:  # type: ignore[no-untyped-def]
    script = tmp_path / "diffusers_worker.py"
    script.write_text(DIFFUSERS_WORKER, encoding="utf-8")
    return run_json(
        [str(st.python), str(script), json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in args.items()})]
    )


def kohya_worker(backend_home: dict, tmp_path: Path, **args: object) -> dict:
    env = usable_env(backend_home, "kohya")
    root = env.root or REPO / "third_party" / "sd-scripts"
    if not (root / "sd3_train_network.py").exists():
        pytest.skip(f"no sd-scripts checkout at {root}: run `git submodule update --init`")
    script = tmp_path / "kohya_worker.py"
    script.write_text(KOHYA_WORKER, encoding="utf-8")
    payload = json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in args.items()})
    return run_json([str(env.python), str(script), payload], cwd=root)


def test_tiny_sd3_renders_in_diffusers(st, sd3_model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = diffusers_worker(st, tmp_path, model=sd3_model)
    assert out["pipeline"] == "StableDiffusion3Pipeline" and out["std"] > 0.01, out
    t5 = sd3_model / "kohya" / "t5xxl.safetensors"
    assert t5.stat().st_size > 9e9 and t5.stat().st_blocks * 512 < 50e6  # full size for sd-scripts, a sparse file


def test_tiny_chroma_renders_in_diffusers(st, chroma_model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = diffusers_worker(st, tmp_path, model=chroma_model)
    assert out["pipeline"] == "ChromaPipeline" and out["std"] > 0.01, out
    full = chroma_model / "kohya" / "chroma.safetensors"
    assert full.stat().st_size > 17e9 and full.stat().st_blocks * 512 < 1.5e9


def test_sd_scripts_loads_the_tiny_sd3_and_its_clip_files_encode_as_the_folder_does(  # type: ignore[no-untyped-def]
    st, sd3_model: Path, backend_home: dict, tmp_path: Path
) -> None:
    prompt = "ohwx, a red circle on a light background"
    report = kohya_worker(
        backend_home, tmp_path, family="sd3", model=sd3_model, encode=prompt, encoded=tmp_path / "kohya.pt"
    )
    assert report["model_type"] == "5-large" and report["t5_params"] > 4.7e9, report
    out = diffusers_worker(st, tmp_path, model=sd3_model, encode=prompt, compare=tmp_path / "kohya.pt")
    for key, diff in out["max_diff"].items():  # bf16 in sd-scripts, fp32 in diffusers: equal to bf16's precision
        assert diff < 0.02 * max(out["scale"][key], 1.0), (key, diff, out["scale"][key])


def test_sd_scripts_loads_the_full_size_tiny_chroma(chroma_model: Path, backend_home: dict, tmp_path: Path) -> None:
    report = kohya_worker(backend_home, tmp_path, family="chroma", model=chroma_model)
    assert report["blocks"] == [19, 38] and report["params"] > 8.8e9, report


def simpletuner_run(st, model: Path, family: str, tmp_path: Path, **extra: object) -> Path:  # type: ignore[no-untyped-def]
    """SimpleTuner's own command line (as the backend launches it) on the tiny model: 4 steps, one checkpoint."""
    from orchestrator.tiny.dataset import make_dataset

    data = make_dataset(tmp_path / "data", count=4, size=128)
    config = tmp_path / "config"
    config.mkdir()
    backends = [
        {
            "id": "tiny-local",
            "type": "local",
            "instance_data_dir": str(data),
            "caption_strategy": "textfile",
            "crop": False,
            "resolution": 128,
            "resolution_type": "pixel",
            "minimum_image_size": 64,
            "repeats": 0,
            "cache_dir_vae": str(tmp_path / "cache" / "vae"),
            "vae_cache_ondemand": True,
        },
        {
            "id": "text-embeds",
            "dataset_type": "text_embeds",
            "default": True,
            "type": "local",
            "cache_dir": str(tmp_path / "cache" / "text"),
        },
    ]
    (config / "multidatabackend.json").write_text(json.dumps(backends), encoding="utf-8")
    settings = {
        "model_family": family,
        "model_type": "lora",
        "lora_type": "standard",
        "lora_rank": 4,
        "pretrained_model_name_or_path": str(model),
        "data_backend_config": str(config / "multidatabackend.json"),
        "output_dir": str(tmp_path / "output"),
        "max_train_steps": 4,
        "num_train_epochs": 0,
        "checkpoint_step_interval": 2,
        "learning_rate": 1e-4,
        "lr_scheduler": "constant",
        "optimizer": "optimi-adamw",
        "mixed_precision": "no",
        "base_model_precision": "no_change",
        "train_batch_size": 1,
        "resolution": 128,
        "resolution_type": "pixel",
        "seed": 42,
        "report_to": "none",
        "validation_disable": True,
        "disable_benchmark": True,
        "vae_batch_size": 1,
        **extra,
    }
    (config / "config.json").write_text(json.dumps(settings), encoding="utf-8")
    env = os.environ | {
        "CONFIG_BACKEND": "json",
        "CONFIG_PATH": str(config / "config.json"),
        "SIMPLETUNER_DISABLE_COLORS": "1",
        "ACCELERATE_CONFIG_FILE": os.devnull,
        "CUDA_VISIBLE_DEVICES": "",
    }
    result = subprocess.run(
        [str(st.python), "-m", "simpletuner.train"], cwd=config, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "output" / "checkpoint-2").is_dir()
    return tmp_path / "output" / "pytorch_lora_weights.safetensors"


def test_simpletuner_trains_sd3_and_diffusers_loads_the_lora(st, sd3_model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lora = simpletuner_run(st, sd3_model, "sd3", tmp_path)
    assert all(k.startswith("transformer.transformer_blocks.") for k in read(lora)[0])
    out = diffusers_worker(st, tmp_path, model=sd3_model, lora=lora, perturb=True, out=tmp_path / "p.safetensors")
    assert out["modules"] == 8 and out["pixel_change"] > 0.5, out  # to_q/k/v/out.0 in both blocks


def test_simpletuner_trains_chroma_and_diffusers_loads_the_lora(st, chroma_model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lora = simpletuner_run(st, chroma_model, "chroma", tmp_path, tokenizer_max_length=32)
    out = diffusers_worker(st, tmp_path, model=chroma_model, lora=lora, perturb=True, out=tmp_path / "p.safetensors")
    assert out["modules"] == 11 and out["pixel_change"] > 0.5, out


def kohya_style_lora(weights: dict[str, tuple[int, int]], out: Path) -> Path:
    """A LoRA in sd-scripts' layout for these (module -> (in, out)) targets: rank 4, alpha 2, random up weights."""
    rng = np.random.default_rng(0)
    tensors = {}
    for module, (n_in, n_out) in weights.items():
        down = rng.standard_normal((4, n_in)).astype("<f4") * 0.1
        up = rng.standard_normal((n_out, 4)).astype("<f4") * 0.5
        tensors[f"{module}.lora_down.weight"] = Tensor("F32", [4, n_in], down.tobytes())
        tensors[f"{module}.lora_up.weight"] = Tensor("F32", [n_out, 4], up.tobytes())
        tensors[f"{module}.alpha"] = make_scalar(2.0)
    return write(out, tensors, {})


def test_an_sd_scripts_sd3_lora_loads_in_diffusers_only_after_conversion(  # type: ignore[no-untyped-def]
    st, sd3_model: Path, tmp_path: Path
) -> None:
    # every module sd-scripts' lora_sd3 trains on this MMDiT (as in tests/fixtures/kohya/sd3): its Linear weights
    tensors, _ = read(sd3_model / "kohya" / "sd3.safetensors")
    targets = {}
    for key, t in tensors.items():
        m = re.fullmatch(
            r"model\.diffusion_model\.(joint_blocks\.\d+\.\w+_block\.(?:attn\.qkv|attn\.proj|mlp\.fc[12]|adaLN_modulation\.1))\.weight",
            key,
        )
        if m:
            targets["lora_unet_" + m.group(1).replace(".", "_")] = (t.shape[1], t.shape[0])
    assert len(targets) == 17
    kohya = kohya_style_lora(targets, tmp_path / "kohya.safetensors")
    raw = diffusers_worker(st, tmp_path, model=sd3_model, lora=kohya)
    assert raw["modules"] == 0 and raw["pixel_change"] == 0, raw  # diffusers ignores it without a word
    converted = convert(kohya, tmp_path / "diffusers.safetensors", "diffusers")  # `loraforge convert`
    out = diffusers_worker(st, tmp_path, model=sd3_model, lora=converted)
    assert out["modules"] == 25 and out["pixel_change"] > 0.5, out  # 4 qkv modules become 12


def test_an_sd_scripts_chroma_lora_loads_in_diffusers_as_it_is(st, chroma_model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # networks.lora_flux's modules on Chroma's blocks (as in tests/fixtures/kohya/chroma), for the blocks this model has
    h, mlp = 3072, 12288
    targets = {}
    for side in ("img", "txt"):
        targets |= {
            f"lora_unet_double_blocks_0_{side}_attn_qkv": (h, 3 * h),
            f"lora_unet_double_blocks_0_{side}_attn_proj": (h, h),
            f"lora_unet_double_blocks_0_{side}_mlp_0": (h, mlp),
            f"lora_unet_double_blocks_0_{side}_mlp_2": (mlp, h),
        }
    targets |= {
        "lora_unet_single_blocks_0_linear1": (h, 3 * h + mlp),
        "lora_unet_single_blocks_0_linear2": (h + mlp, h),
    }
    kohya = kohya_style_lora(targets, tmp_path / "kohya.safetensors")
    out = diffusers_worker(st, tmp_path, model=chroma_model, lora=kohya)
    assert out["modules"] == 17 and out["pixel_change"] > 0.5, out  # qkv and linear1 split by diffusers' reader
