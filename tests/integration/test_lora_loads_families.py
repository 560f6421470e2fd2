"""SD3, Chroma, Lumina 2, Qwen-Image and FLUX.2 LoRAs: `convert` maps sd-scripts' layout as diffusers itself maps the
checkpoints, and `loraforge sample` renders every family from every layout its trainers write.

- Conversions against diffusers' own single-file converters (convert_sd3_transformer_checkpoint_to_diffusers,
  convert_chroma_transformer_checkpoint_to_diffusers, convert_lumina2_to_diffusers), which turn the original
  checkpoints sd-scripts trains into diffusers' modules. Each original weight becomes a column of distinct numbers
  (its rows' ids) and goes through the converter; a Kohya LoRA whose up matrix is that same column goes through
  `convert`: every diffusers module must get exactly the rows the converter gives its weight (names, qkv splits, the
  rows swapped in SD3's pre-only modulation and final layer). SD3 and Chroma take the tiny models' checkpoint files
  (Chroma's at full size), Lumina 2 the key set of the 2B model (the converter fixes its q/k/v sizes).
- `loraforge sample` (fixed seed, 64 px, 2 steps) on each tiny model with a LoRA in each layout its trainers write,
  built with the module sets and shapes of the real runs (tests/fixtures/{kohya,simpletuner}/<family>) and random
  non-zero weights: sd-scripts' Kohya layout for SD3, Chroma and Lumina 2 (converted on the way), SimpleTuner's
  diffusers layout for all five. Each must load (the worker stops when diffusers attaches no module) and change the
  image. sd-scripts' SD3 and Lumina 2 files handed to diffusers as they are attach nothing, and say so; its Chroma
  file, which diffusers' Kohya-Flux reader takes, gives the image our conversion gives.

Needs SimpleTuner's environment (diffusers, peft) and the tiny models it builds (cached); skipped where absent.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.cli import main
from orchestrator.lora.convert import convert
from orchestrator.lora.safetensors_io import Tensor, read, read_header, write
from orchestrator.lora.sample import WORKER
from orchestrator.tiny import FAMILY_BUILDERS
from tests.conftest import _REAL_HOME, family_params, usable_env
from tests.unit.test_lora_sd3_lumina2 import LUMINA2_2B, LUMINA2_TINY, kohya_file, lumina2_modules, values

pytestmark = pytest.mark.integration

BUILDERS = FAMILY_BUILDERS
# The original Linear weights sd-scripts trains (networks.lora_sd3 with emb_dims, lora_flux on Chroma with in_dims)
TRAINED = {
    "sd3": r"(joint_blocks\.\d+\.(x|context)_block\.(attn2?\.(qkv|proj)|mlp\.fc[12]|adaLN_modulation\.1)|context_embedder"
    r"|[ty]_embedder\.mlp\.[02]|x_embedder\.proj|final_layer\.(linear|adaLN_modulation\.1))",
    "chroma": r"(double_blocks\.\d+\.(img|txt)_(attn\.(qkv|proj)|mlp\.[02])|single_blocks\.\d+\.linear[12]|img_in|txt_in)",
}
ORACLE = r"""
import json, sys
import torch
from diffusers import DiffusionPipeline
from diffusers.loaders import single_file_utils as S
from safetensors.torch import save_file

args = json.loads(sys.argv[1])
converters = {"sd3": S.convert_sd3_transformer_checkpoint_to_diffusers, "lumina2": S.convert_lumina2_to_diffusers,
              "chroma": S.convert_chroma_transformer_checkpoint_to_diffusers}
for job in args["convert"]:
    checkpoint, start = {}, 0
    for name, shape in job["shapes"].items():  # every weight: its rows numbered, one column
        rows = shape[0] if shape else 1
        ids = torch.arange(start, start + rows, dtype=torch.float64)
        checkpoint[name] = ids.reshape(rows, 1) if len(shape) >= 2 else ids.reshape(shape)
        start += rows
    converted = converters[job["family"]](checkpoint)
    save_file({k: v.contiguous() for k, v in converted.items() if v.dim() == 2}, job["out"])
scalings = {}
for job in args["load"]:  # the scale diffusers' own loader gives each module of a converted LoRA
    pipe = DiffusionPipeline.from_pretrained(job["model"], torch_dtype=torch.float32)
    pipe.load_lora_weights(job["lora"], adapter_name="x")
    modules = pipe.transformer.named_modules()
    scalings[job["family"]] = {n: m.scaling["x"] for n, m in modules if "x" in getattr(m, "scaling", {})}
print(json.dumps(scalings))
"""


@pytest.fixture(scope="module")
def checked_python() -> Path | str:
    """SimpleTuner's Python if it is set up and has diffusers and peft (checked once: the probe takes seconds), else
    the reason to skip."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORAFORGE_HOME", str(_REAL_HOME))
        from orchestrator.envs import load_registry

        try:
            env = usable_env(load_registry(), "simpletuner")
        except pytest.skip.Exception as skipped:
            return str(skipped)
    check = subprocess.run([str(env.python), "-c", "import diffusers, peft"], capture_output=True, text=True)
    if check.returncode != 0:
        return f"{env.python} lacks diffusers or peft: run `loraforge setup simpletuner`"
    return Path(env.python)


@pytest.fixture
def st_python(checked_python: Path | str, backend_home: dict) -> Path:
    if isinstance(checked_python, str):
        pytest.skip(checked_python)
    return checked_python


def shapes_of(path: Path) -> dict[str, list[int]]:
    return {name: entry["shape"] for name, entry in read_header(path)[0].items()}


def lumina2_originals() -> dict[str, list[int]]:
    """The 2B checkpoint's weights lora_lumina trains, by their original names ([out, in]); sd-scripts names its
    modules after them, dots made underscores."""
    kinds = {
        "attention_qkv": "attention.qkv",
        "attention_out": "attention.out",
        "adaLN_modulation_1": "adaLN_modulation.1",
    }
    kinds |= {f"feed_forward_w{n}": f"feed_forward.w{n}" for n in (1, 2, 3)}
    out = {}
    for module, (n_in, n_out) in lumina2_modules(LUMINA2_2B).items():
        block, index, kind = re.fullmatch(
            r"lora_unet_(layers|noise_refiner|context_refiner|final_layer)_(\d+_)?(.+)", module
        ).groups()
        name = (
            f"{block}.{index.rstrip('_')}.{kinds[kind]}" if index else f"final_layer.{kinds.get(kind, kind)}"
        )  # linear
        out[name + ".weight"] = [n_out, n_in]
    return out


@pytest.mark.slow  # builds Chroma (~2.8 GB of disk) and the Lumina 2 kohya files
def test_kohya_conversions_split_and_scale_as_diffusers_does(st_python: Path, tmp_path: Path) -> None:
    models = {family: BUILDERS[family](st_python) for family in ("sd3", "chroma", "lumina2")}
    checkpoints = {
        "sd3": shapes_of(models["sd3"] / "kohya" / "sd3.safetensors"),
        "chroma": shapes_of(models["chroma"] / "kohya" / "chroma.safetensors"),
        "lumina2": lumina2_originals(),
    }
    jobs = [{"family": f, "shapes": s, "out": str(tmp_path / f"{f}.safetensors")} for f, s in checkpoints.items()]
    loads, alphas = [], {}  # sd-scripts' LoRAs for the tiny models, one module at alpha 8 (scale 2), the rest at 2
    for family, model in models.items():
        kohya = sd_scripts_lora(family, model, tmp_path / f"{family}-tiny.safetensors", alpha_8=True)
        lora = convert(kohya, tmp_path / f"{family}-tiny-diffusers.safetensors", "diffusers")
        loads.append({"family": family, "model": str(model), "lora": str(lora)})
        tensors, meta = read(lora)
        peft = json.loads(meta["lora_adapter_metadata"])
        alphas[family] = {
            k.removeprefix("transformer.").removesuffix(".lora_A.weight"): 2.0
            for k in tensors
            if k.endswith(".lora_A.weight")
        }
        alphas[family] |= peft["transformer.alpha_pattern"]
        assert set(peft["transformer.alpha_pattern"].values()) == {8.0}
    script = tmp_path / "oracle.py"
    script.write_text(ORACLE, encoding="utf-8")
    argv = [str(st_python), str(script), json.dumps({"convert": jobs, "load": loads})]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    scalings = json.loads(done.stdout.strip().splitlines()[-1])
    for family, expected in alphas.items():  # PEFT's metadata read: every module at its own alpha / rank
        assert scalings[family] == {module: alpha / 4 for module, alpha in expected.items()}, family
    for family, shapes in checkpoints.items():
        tensors, start, trained = {}, 0, re.compile(rf"(model\.diffusion_model\.)?{TRAINED.get(family, '.*')}\.weight")
        for name, shape in shapes.items():
            rows = shape[0] if shape else 1
            if trained.fullmatch(name) and len(shape) >= 2:  # up = the converter's row ids; down: the real width
                module = "lora_unet_" + name.removeprefix("model.diffusion_model.").removesuffix(".weight")
                module = module.replace(".", "_")
                ids = np.arange(start, start + rows, dtype="<f8").reshape(rows, *([1] * (len(shape) - 1)))
                tensors[f"{module}.lora_up.weight"] = Tensor("F64", list(ids.shape), ids.tobytes())
                down = np.ones((1, *shape[1:]), dtype="<f8")
                tensors[f"{module}.lora_down.weight"] = Tensor("F64", list(down.shape), down.tobytes())
            start += rows
        meta = {"ss_model_type": "chroma"} if family == "chroma" else {}
        source = write(tmp_path / f"{family}-kohya.safetensors", tensors, meta)
        ours, _ = read(convert(source, tmp_path / f"{family}-diffusers.safetensors", "diffusers"))
        theirs, _ = read(tmp_path / f"{family}.safetensors")
        checked = 0
        for key, t in ours.items():
            if key.endswith(".lora_B.weight"):
                weight = key.removeprefix("transformer.").replace(".lora_B.weight", ".weight")
                assert weight in theirs, (family, weight)
                np.testing.assert_array_equal(values(t).reshape(-1), values(theirs[weight]).reshape(-1), err_msg=weight)
                checked += 1
        expected_count = {"sd3": 25 + 8, "chroma": 19 * 12 + 38 * 5 + 2, "lumina2": 180 + 30 * 2}[family]
        assert checked == expected_count, (family, checked)


def diffusers_lora(model: Path, modules: list[str], out: Path) -> Path:
    """SimpleTuner's layout for these transformer modules of ``model``, shapes from the model; rank 4, alpha 4."""
    header = shapes_of(model / "transformer" / "diffusion_pytorch_model.safetensors")
    rng, tensors = np.random.default_rng(0), {}
    for module in modules:
        n_out, n_in = header[f"{module}.weight"]
        for part, shape in (("lora_A", (4, n_in)), ("lora_B", (n_out, 4))):
            a = (rng.standard_normal(shape) * 0.3).astype("<f4")
            tensors[f"transformer.{module}.{part}.weight"] = Tensor("F32", list(shape), a.tobytes())
    peft = {"transformer.r": 4, "transformer.lora_alpha": 4, "transformer.target_modules": modules}
    return write(out, tensors, {"lora_adapter_metadata": json.dumps(peft)})


def sd_scripts_lora(family: str, model: Path, out: Path, *, alpha_8: bool = False) -> Path:
    """sd-scripts' layout with the module set of the fixture run, for the blocks this tiny model has; alpha 2 at
    rank 4, or 8 for one qkv module with ``alpha_8``."""
    if family == "lumina2":
        modules = lumina2_modules(LUMINA2_TINY)
        meta = {"ss_base_model_version": "lumina2"}
    else:
        source = model / "kohya" / ("sd3.safetensors" if family == "sd3" else "chroma.safetensors")
        trained = re.compile(rf"(model\.diffusion_model\.)?({TRAINED[family]})\.weight")
        modules = {}
        for name, shape in shapes_of(source).items():
            match = trained.fullmatch(name)
            if match and len(shape) == 2 and re.search(r"(joint|double|single)_blocks\.", name):  # no embedders
                if family == "chroma" and not re.match(r"(double|single)_blocks\.0\.", match.group(2)):
                    continue  # the tiny folder has block 0 of each kind; the full-size file's others are zero
                modules["lora_unet_" + match.group(2).replace(".", "_")] = (shape[1], shape[0])
        assert len(modules) == {"sd3": 17, "chroma": 10}[family]
        meta = {"ss_model_type": "chroma"} if family == "chroma" else {"ss_base_model_version": "5-large"}
    qkv = next(m for m in sorted(modules) if m.endswith("qkv"))
    return kohya_file(out, modules, meta, scale=3.0, alphas={qkv: 8.0} if alpha_8 else None)


SIMPLETUNER_MODULES = {  # the real runs' modules (tests/fixtures/simpletuner/<family>/README.md)
    "sd3": [f"transformer_blocks.{b}.attn.{p}" for b in (0, 1) for p in ("to_q", "to_k", "to_v", "to_out.0")],
    "chroma": [f"transformer_blocks.0.attn.{p}" for p in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj",
               "add_k_proj", "add_v_proj", "to_add_out")] + [f"single_transformer_blocks.0.attn.{p}" for p in ("to_q", "to_k", "to_v")],
    "lumina2": [f"{b}.attn.{p}" for b in ("layers.0", "layers.1", "noise_refiner.0", "context_refiner.0")
                for p in ("to_q", "to_k", "to_v", "to_out.0")],
    "qwen_image": [f"transformer_blocks.{b}.attn.{p}" for b in (0, 1) for p in ("to_q", "to_k", "to_v", "to_out.0")],
    "flux2": [f"transformer_blocks.0.attn.{p}" for p in ("to_q", "to_k", "to_v", "to_out.0")]
    + [f"single_transformer_blocks.{b}.attn.to_qkv_mlp_proj" for b in (0, 1)],
}  # fmt: skip


def sample(
    python: Path, model: Path, lora: Path, out: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[np.ndarray, float]:
    """`loraforge sample` at a fixed seed: the image and how far the LoRA moved it (levels of 255)."""
    argv = ["sample", str(lora), "--base-model", str(model), "--prompt", "photo of ohwx", "--seed", "7"]
    argv += ["--steps", "2", "--size", "64", "--guidance", "1", "--max-tokens", "32", "-o", str(out)]
    argv += ["--python", str(python)]
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    (line,) = capsys.readouterr().out.strip().splitlines()
    path, change = re.fullmatch(r"(\S+)  \(the LoRA changes it by ([\d.]+) levels of 255 on average\)", line).groups()
    return np.asarray(Image.open(path), dtype=np.int16), float(change)


@pytest.mark.parametrize("family", family_params())
def test_loraforge_sample_renders_every_layout_of_each_family(
    family: str, st_python: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = BUILDERS[family](st_python)
    simpletuner = diffusers_lora(model, SIMPLETUNER_MODULES[family], tmp_path / "simpletuner.safetensors")
    _, change = sample(st_python, model, simpletuner, tmp_path / "st", capsys)
    assert change > 0.5, change
    if family not in ("sd3", "chroma", "lumina2"):
        return
    kohya = sd_scripts_lora(family, model, tmp_path / "kohya.safetensors")
    ours, change = sample(st_python, model, kohya, tmp_path / "k", capsys)  # converted on the way
    assert change > 0.5, change
    # the file as it is, straight to the worker: diffusers reads sd-scripts' Chroma names, not SD3's or Lumina 2's
    args = {"base_model": str(model), "lora": str(kohya), "prompts": ["photo of ohwx"], "seeds": [7], "steps": 2}
    args |= {"out_dir": str(tmp_path / "raw"), "size": 64, "scale": 1.0, "guidance": 1.0, "max_tokens": 32}
    raw = subprocess.run([str(st_python), str(WORKER), json.dumps(args)], capture_output=True, text=True, timeout=600)
    if family == "chroma":
        assert raw.returncode == 0, raw.stderr[-3000:]
        theirs = np.asarray(Image.open(json.loads(raw.stdout.splitlines()[-1])["path"]), dtype=np.int16)
        assert np.abs(theirs - ours).max() <= 1, np.abs(theirs - ours).max()  # the same delta, up to rounding
    else:
        assert raw.returncode != 0 and "attached none of kohya.safetensors's modules" in raw.stderr, raw.stderr[-2000:]
