"""`loraforge train` through SimpleTuner on the tiny SD3.5, Chroma, Lumina 2, Qwen-Image and FLUX.2 models, for real.

Each run: 3 CPU steps at 128 px on 3 captioned images, a checkpoint at step 2, the family inferred from the model
folder. Checked: one Progress per step with its loss, the phases setup..done in order, the checkpoint, the LoRA in
the run's output folder (diffusers keys, PEFT's rank and alpha, loraforge's metadata with the family and the image
count), and that diffusers' load_lora_weights (in SimpleTuner's own venv, as `loraforge sample` runs it) loads it
and that it changes a fixed-seed image. Three steps at 1e-4 move the up weights (zero at the start) by ~3e-4, so the
image is also rendered with them scaled x1000, which must move it clearly. Alpha is half the rank, so diffusers
applies the LoRA at half strength only if the file says so (SimpleTuner's own final file does not).

What the tests set beyond the job is a test concern, never the product's: Chroma's T5 reads 32 tokens (its default
512 at Chroma's width makes each step ~10x slower), and FLUX.2-dev's Mistral-3, which SimpleTuner loads by hub id
only, comes from the hub cache the tiny builder writes inside the model (HF_HUB_CACHE).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.events import Checkpoint, Event, Finished, Phase, Progress
from orchestrator.tiny import FAMILY_BUILDERS
from tests.conftest import family_params, usable_env

pytestmark = pytest.mark.integration

BUILDERS = FAMILY_BUILDERS
TEST_ARGS: dict[str, dict[str, object]] = {"chroma": {"tokenizer_max_length": 32}}  # see the module docstring
PIPELINES = {
    "sd3": "StableDiffusion3Pipeline",
    "chroma": "ChromaPipeline",
    "lumina2": "Lumina2Pipeline",
    "qwen_image": "QwenImagePipeline",
    "flux2": "Flux2Pipeline",
}
STEPS = 3

# One image without the LoRA, with it, and with its up weights x1000, at a fixed seed (the prompt by keyword:
# Flux2Pipeline's first positional argument is an image; Qwen-Image's guidance is true_cfg_scale).
RENDER = r"""
import inspect, json, sys, tempfile
from pathlib import Path
import numpy as np, torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file, save_file

args = json.loads(sys.argv[1])
pipe = DiffusionPipeline.from_pretrained(args["model"], torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
accepted = inspect.signature(pipe.__call__).parameters
options = {"true_cfg_scale": 1.0} if "true_cfg_scale" in accepted else {"guidance_scale": 1.0}
if "max_sequence_length" in accepted:
    options["max_sequence_length"] = 32

def render():
    image = pipe(prompt="photo of ohwx", num_inference_steps=2, height=64, width=64, output_type="np",
                 generator=torch.Generator("cpu").manual_seed(7), **options).images[0]
    return np.asarray(image, dtype=np.float64) * 255

base = render()
lora = Path(args["lora"])
pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="raw")
out = {"pipeline": type(pipe).__name__, "adapters": pipe.get_list_adapters(), "raw": float(np.abs(render() - base).mean())}
pipe.delete_adapters("raw")
scaled = {k: v * 1000 if "lora_B" in k else v for k, v in load_file(str(lora)).items()}
tmp = Path(tempfile.mkdtemp()) / "scaled.safetensors"
save_file(scaled, str(tmp))
pipe.load_lora_weights(str(tmp.parent), weight_name=tmp.name, adapter_name="scaled")
out["scaled"] = float(np.abs(render() - base).mean())
print(json.dumps(out))
"""


def captioned_images(folder: Path, count: int = 3) -> Path:
    from orchestrator.tiny.dataset import make_dataset

    make_dataset(folder, count=count, size=128)
    for caption in folder.glob("*.txt"):
        caption.write_text("ohwx, " + caption.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def render_with_lora(python: Path, model: Path, lora: Path, tmp: Path) -> dict:
    script = tmp / "render.py"
    script.write_text(RENDER, encoding="utf-8")
    result = subprocess.run(
        [str(python), str(script), json.dumps({"model": str(model), "lora": str(lora)})],
        capture_output=True,
        text=True,
        timeout=900,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family", family_params())
def test_train_a_family_and_load_its_lora_in_diffusers(family: str, backend_home: dict, tmp_path: Path) -> None:
    from orchestrator.job import build_job
    from orchestrator.lora.safetensors_io import read_header
    from orchestrator.training import run_training

    env = usable_env(backend_home, "simpletuner")
    model = BUILDERS[family](env.python)
    job = build_job(
        {
            "name": f"tiny-{family}",
            "base_model": str(model),  # the family comes from model_index.json
            "dataset": str(captioned_images(tmp_path / "data")),
            "trigger": "ohwx",
            "network": {"rank": 4, "alpha": 2},  # alpha != rank: the file must say which
            "training": {"steps": STEPS, "resolution": 128, "precision": "fp32", "gradient_checkpointing": False},
            "saving": {"every_n_steps": 2, "format": "diffusers"},
            "output": {"dir": str(tmp_path / "runs")},
            "backend_args": {"simpletuner": TEST_ARGS.get(family, {})},
        }
    )
    hub_cache = {"HF_HUB_CACHE": str(model / "hf-cache")} if family == "flux2" else {}
    seen: list[Event] = []
    start = time.monotonic()
    outcome = run_training(job, "simpletuner", handlers=[seen.append], extra_env=hub_cache)
    seconds = time.monotonic() - start
    assert outcome.ok, (outcome.failure, (outcome.run.logs / "stderr.log").read_text()[-3000:])

    steps = [e for e in seen if isinstance(e, Progress)]
    assert [e.step for e in steps] == list(range(1, STEPS + 1)), steps
    assert all(e.loss is not None and 0 < e.loss < 20 for e in steps)
    phases = [e.name for e in seen if isinstance(e, Phase)]
    assert phases == ["setup", "loading", "caching", "training", "saving", "done"], phases
    assert [e.step for e in seen if isinstance(e, Checkpoint)] == [2]
    assert isinstance(seen[-1], Finished)
    config = json.loads((outcome.run.rendered / "config.json").read_text())
    assert config["model_family"] == family
    assert config.get("model_flavour") == {"qwen_image": "v1.0", "flux2": "dev"}.get(family)

    lora = outcome.lora
    assert lora == outcome.run.output / f"tiny-{family}.safetensors"
    header, metadata, _ = read_header(lora)
    keys = list(header)
    assert keys and all(re.fullmatch(r"transformer\..+\.lora_[AB]\.weight", k) for k in keys), keys[:5]
    assert metadata["loraforge_family"] == family
    assert metadata["loraforge_backend"] == "simpletuner"
    assert metadata["loraforge_dataset_images"] == "3"
    assert metadata["loraforge_trigger"] == "ohwx"
    peft = json.loads(metadata["lora_adapter_metadata"])  # SimpleTuner's final file lacks it; collect puts it back
    assert (peft["transformer.r"], peft["transformer.lora_alpha"]) == (4, 2)

    shown = render_with_lora(Path(env.python), model, lora, tmp_path)
    assert shown["pipeline"] == PIPELINES[family]
    assert shown["adapters"] == {"transformer": ["raw"]}
    assert 0 < shown["raw"] < shown["scaled"] and shown["scaled"] > 0.1, shown
    print(
        f"\n{family}: trained {STEPS} steps in {seconds:.1f} s (losses {[round(e.loss or 0, 4) for e in steps]}), {shown}"
    )
