"""Seconds per step and peak GPU memory of LoRA training on full-size models, both backends, orchestrated and direct.

    .venv/bin/python benchmarks/bench_gpu.py                          # SDXL + Flux, kohya + simpletuner, on CUDA
    .venv/bin/python benchmarks/bench_gpu.py --families sdxl --backends simpletuner --steps 12
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --scale tiny --families sdxl,flux --backends simpletuner
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --scale tiny --families sd15 --backends kohya

Nothing is downloaded. Each family is built once from its published configuration (the config dicts below, each
with its source) with random weights, in the layout each backend loads, by this same file run with a backend
environment's interpreter (``--build``: torch, diffusers and transformers live there, never in loraforge's), on the
GPU when there is one (random init of 12 B parameters takes minutes on CPU cores, seconds on a GPU), and cached
(``--cache``; a changed config rebuilds). Then, per family and backend, at 1024 px, batch 1, loraforge's default face
preset (orchestrator/presets/builtin/face-<family>.yaml) for ``--steps`` steps:

- orchestrated: ``loraforge train JOB --backend B --preset face-<family> --json``;
- direct: the command the run folder keeps in rendered/command.txt, run by hand (its first run's output set aside).

Each step's time is the wall time between two progress readings as they arrive (the same measure as the run's speed
check, orchestrator/speed/check.py), the median after ``--warmup`` steps; peak GPU memory is sampled with nvidia-smi
for the trainer's process tree (orchestrator/compare/monitor.py: torch's own counters are inside the trainer). Written
to --out (default runs/bench-gpu-TIME): results.json, results.md and, on a GPU, rows.tsv (ready for
orchestrator/speed/expected.tsv).

``--scale tiny`` builds the same pipelines with tiny stand-in configs, so the whole script runs on a CPU in minutes.
sd-scripts fixes some geometries in its source (the SDXL and SD 1.5 U-Nets, Flux's width, T5-XXL and CLIP-L): there
the tiny model keeps them, which is why tiny kohya runs use SD 1.5 (its 0.86 B U-Net fits a CPU) and skip SDXL/Flux.

Time plan for one H100 (16 cores, 15 minutes of device time, models not cached; estimates, not yet timed): SDXL
build ~1 min (3.5 B parameters initialised on the GPU, 7 GB written), Flux ~2 min (16.8 B, 34 GB written); each of
the 8 runs loads its model (~20-60 s), caches 4 images' latents and captions and trains 20 steps. Use ``--modes
direct`` or fewer ``--steps`` when the budget is tight; a second call on the same machine reuses the built models.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY_SCRIPTS = REPO / "orchestrator" / "tiny"  # the tiny builders' tokenizer helpers (sdxl_script, flux_script)
BUILDER_VERSION = 1  # bump when the layout written below changes: cached models rebuild

# --- published configurations ----------------------------------------------------------------------------------
# Each dict is the model's own config.json (keys that are the library defaults or only describe the file dropped).

CLIP_L = {  # openai/clip-vit-large-patch14 text model, as SD 1.5's text_encoder, SDXL's text_encoder and FLUX.1's
    # text_encoder publish it (e.g. https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/text_encoder/config.json)
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
SD_VAE = {  # SD 1.5's and SDXL's AutoencoderKL (vae/config.json of both; SDXL's scaling_factor 0.13025)
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
}
SDXL = {  # https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/tree/main/{unet,vae,text_encoder,...}
    "unet": {
        "sample_size": 128,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [320, 640, 1280],
        "layers_per_block": 2,
        "transformer_layers_per_block": [1, 2, 10],
        "attention_head_dim": [5, 10, 20],
        "cross_attention_dim": 2048,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
        "norm_num_groups": 32,
    },
    "vae": SD_VAE,
    "text_encoder": CLIP_L,
    "text_encoder_2": {  # laion/CLIP-ViT-bigG-14 text model with projection (text_encoder_2/config.json)
        **CLIP_L,
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "hidden_act": "gelu",
        "projection_dim": 1280,
    },
    "scheduler": {  # scheduler/scheduler_config.json (EulerDiscreteScheduler)
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "steps_offset": 1,
    },
}
FLUX = {  # https://huggingface.co/black-forest-labs/FLUX.1-dev/tree/main/{transformer,vae,text_encoder_2,...}
    "transformer": {
        "patch_size": 1,
        "in_channels": 64,
        "num_layers": 19,
        "num_single_layers": 38,
        "attention_head_dim": 128,
        "num_attention_heads": 24,
        "joint_attention_dim": 4096,
        "pooled_projection_dim": 768,
        "guidance_embeds": True,
        "axes_dims_rope": [16, 56, 56],
    },
    "vae": {
        **SD_VAE,
        "latent_channels": 16,
        "scaling_factor": 0.3611,
        "shift_factor": 0.1159,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
    },
    "text_encoder": CLIP_L,
    "text_encoder_2": {  # google/t5-v1_1-xxl encoder (text_encoder_2/config.json; sd-scripts' flux_utils.load_t5xxl)
        "vocab_size": 32128,
        "d_model": 4096,
        "d_kv": 64,
        "d_ff": 10240,
        "num_layers": 24,
        "num_heads": 64,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu",
        "dense_act_fn": "gelu_new",
        "layer_norm_epsilon": 1e-6,
        "tie_word_embeddings": False,
        "is_encoder_decoder": False,
    },
    "scheduler": {  # scheduler/scheduler_config.json (FlowMatchEulerDiscreteScheduler)
        "num_train_timesteps": 1000,
        "shift": 3.0,
        "use_dynamic_shifting": True,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
    },
}
SD15 = {  # https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/tree/main/{unet,vae,text_encoder}
    "unet": {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "attention_head_dim": 8,
        "cross_attention_dim": 768,
        "norm_num_groups": 32,
    },
    "vae": {**SD_VAE, "sample_size": 512, "scaling_factor": 0.18215},
    "text_encoder": CLIP_L,
    "scheduler": {  # scheduler/scheduler_config.json (PNDMScheduler)
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "skip_prk_steps": True,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    },
}
PUBLISHED = {"sdxl": SDXL, "flux": FLUX, "sd15": SD15}

# --- tiny stand-ins (--scale tiny): the same parts, small; what sd-scripts fixes in its source stays full size ------

_TINY_CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
_TINY_VAE = {"block_out_channels": [32] * 4, "layers_per_block": 1, "sample_size": 64}
TINY = {  # component -> keys replaced in the published config (the values of orchestrator/tiny/*_script.py)
    "sdxl": {
        "unet": {
            "sample_size": 16,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "block_out_channels": [32, 64],
            "layers_per_block": 1,
            "transformer_layers_per_block": [1, 1],
            "attention_head_dim": [2, 4],
            "cross_attention_dim": 64,
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 80,  # 6 size values x 8 + text_encoder_2's pooled 32
        },
        "vae": _TINY_VAE,
        "text_encoder": {**_TINY_CLIP, "projection_dim": 32},
        "text_encoder_2": {**_TINY_CLIP, "projection_dim": 32},
    },
    "flux": {
        "transformer": {
            "in_channels": 16,  # 4 latent channels in 2x2 packed patches
            "num_layers": 2,
            "num_single_layers": 2,
            "attention_head_dim": 16,
            "num_attention_heads": 2,
            "joint_attention_dim": 32,
            "pooled_projection_dim": 32,
            "axes_dims_rope": [4, 6, 6],
        },
        "vae": {**_TINY_VAE, "latent_channels": 4},
        "text_encoder": {**_TINY_CLIP, "projection_dim": 32},
        "text_encoder_2": {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4},
    },
    "sd15": {  # sd-scripts loads SD 1.5's U-Net strictly into its own fixed geometry: only the context width shrinks
        "unet": {"cross_attention_dim": 32},
        "vae": _TINY_VAE,
        "text_encoder": {**_TINY_CLIP, "projection_dim": 32},
    },
}
# Where sd-scripts' fixed geometry keeps a tiny model full size, too big for a CPU run: (backend, family) -> why.
TINY_SKIPS = {
    ("kohya", "sdxl"): "sd-scripts fixes SDXL's 2.57 B-parameter U-Net in its source (10 GB in fp32 on a CPU)",
    ("kohya", "flux"): "sd-scripts fixes Flux's width (3072) and builds T5-XXL (4.8 B) and CLIP-L at full size",
}


def configs(family: str, scale: str) -> dict[str, dict[str, Any]]:
    published = PUBLISHED[family]
    if scale == "full":
        return {k: dict(v) for k, v in published.items()}
    tiny = TINY[family]
    return {k: {**v, **tiny.get(k, {})} for k, v in published.items()}


# --- the builder: runs in a backend environment (`python bench_gpu.py --build FAMILY OUT ...`) --------------------


def build(family: str, scale: str, out: Path, device: str, sd_scripts: Path | None) -> None:
    """Write a random-initialised ``family`` model to ``out``: a diffusers folder (what SimpleTuner and sd-scripts'
    SDXL / SD 1.5 scripts load); for Flux also ``kohya/`` with sd-scripts' autoencoder file and tokenizer cache
    (its --ae and --tokenizer_cache_dir; --clip_l and --t5xxl are the folder's text encoder files). Components are
    made one at a time on ``device`` in the dtype they are published in, written, and freed."""
    import torch

    sys.path.insert(0, str(TINY_SCRIPTS))
    from sdxl_script import write_tokenizer  # the tiny models' byte-level BPE: no tokenizer to download

    cfg = configs(family, scale)
    dtype = torch.float32 if device == "cpu" else (torch.bfloat16 if family == "flux" else torch.float16)
    tmp = out.parent / (out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.manual_seed(0)
    vocab = write_tokenizer(tmp / "_bpe")
    index: dict[str, Any] = {
        "_class_name": {"sdxl": "StableDiffusionXLPipeline", "flux": "FluxPipeline"}.get(
            family, "StableDiffusionPipeline"
        )
    }

    def save(name: str, make: Any, library: str, shard: str = "100GB") -> None:
        with torch.device(device):
            torch.set_default_dtype(dtype)
            try:
                model = make()
            finally:
                torch.set_default_dtype(torch.float32)
        model.save_pretrained(str(tmp / name), safe_serialization=True, max_shard_size=shard)
        index[name] = [library, type(model).__name__]
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
        print(f"built {name}", flush=True)

    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    def clip(config: dict[str, Any], with_projection: bool = False) -> Any:
        settings = {**config, "vocab_size": max(config["vocab_size"] if scale == "full" else 0, len(vocab))}
        return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(CLIPTextConfig(**settings))

    save("vae", lambda: AutoencoderKL(**cfg["vae"]), "diffusers")
    save("text_encoder", lambda: clip(cfg["text_encoder"]), "transformers")
    tokenizer = CLIPTokenizer.from_pretrained(str(tmp / "_bpe"), model_max_length=77)
    tokenizer.save_pretrained(str(tmp / "tokenizer"))
    index["tokenizer"] = ["transformers", "CLIPTokenizer"]
    if family == "sdxl":
        from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

        save("text_encoder_2", lambda: clip(cfg["text_encoder_2"], with_projection=True), "transformers")
        # bigG's tokenizer pads with "!" (id 0), as sd-scripts expects of SDXL's second tokenizer
        CLIPTokenizer.from_pretrained(str(tmp / "_bpe"), model_max_length=77, pad_token="!").save_pretrained(
            str(tmp / "tokenizer_2")
        )
        index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
        save("unet", lambda: UNet2DConditionModel(**cfg["unet"]), "diffusers")
        scheduler: Any = EulerDiscreteScheduler(**cfg["scheduler"])
        index.update(force_zeros_for_empty_prompt=True)
    elif family == "sd15":
        from diffusers import PNDMScheduler, UNet2DConditionModel

        save("unet", lambda: UNet2DConditionModel(**cfg["unet"]), "diffusers")
        scheduler = PNDMScheduler(**cfg["scheduler"])
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    else:
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
        from transformers import T5Config, T5EncoderModel

        t5 = cfg["text_encoder_2"]
        # one file: sd-scripts' --t5xxl takes a single file; the transformer in FLUX.1-dev's three 10 GB shards,
        # which sd-scripts reads as they are (flux_utils.analyze_checkpoint_state) and converts to its own layout
        save("text_encoder_2", lambda: T5EncoderModel(T5Config(**t5)), "transformers")
        _t5_tokenizer(tmp / "tokenizer_2", sd_scripts)
        index["tokenizer_2"] = ["transformers", "T5TokenizerFast"]
        save("transformer", lambda: FluxTransformer2DModel(**cfg["transformer"]), "diffusers", shard="10GB")
        scheduler = FlowMatchEulerDiscreteScheduler(**cfg["scheduler"])
        if sd_scripts is not None:
            _kohya_flux_files(tmp, sd_scripts, device)
    scheduler.save_pretrained(str(tmp / "scheduler"))
    index["scheduler"] = ["diffusers", type(scheduler).__name__]
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    shutil.rmtree(tmp / "_bpe")
    tmp.rename(out)  # a half-built model is never found under its final name
    print(f"{family} ({scale}) written to {out}", flush=True)


def _t5_tokenizer(folder: Path, sd_scripts: Path | None) -> None:
    """T5 v1.1's own tokenizer where sd-scripts ships it (configs/t5_old), else the tiny models' unigram one."""
    shipped = sd_scripts / "configs" / "t5_old" if sd_scripts else None
    if shipped is not None and shipped.is_dir():
        shutil.copytree(shipped, folder)
        return
    from flux_script import t5_vocab
    from transformers import T5TokenizerFast

    T5TokenizerFast(vocab=t5_vocab(), extra_ids=0, model_max_length=512).save_pretrained(str(folder))


def _kohya_flux_files(model: Path, sd_scripts: Path, device: str) -> None:
    """sd-scripts' own Flux autoencoder (random, from its config: the FLUX.1 AE) and its tokenizer cache: the folder
    names it looks up for openai/clip-vit-large-patch14 and google/t5-v1_1-xxl."""
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(sd_scripts))
    from library import flux_models

    kohya = model / "kohya"
    tokenizers = kohya / "tokenizers"
    tokenizers.mkdir(parents=True)
    with torch.device(device):
        ae = flux_models.AutoEncoder(flux_models.configs["dev"].ae_params)
    save_file({k: v.contiguous().cpu() for k, v in ae.state_dict().items()}, str(kohya / "ae.safetensors"))
    shutil.copytree(model / "tokenizer", tokenizers / "openai_clip-vit-large-patch14")
    for name in ("vocab.json", "merges.txt"):  # transformers 4.x's CLIPTokenizer reads these, not tokenizer.json
        shutil.copy(model / "_bpe" / name, tokenizers / "openai_clip-vit-large-patch14" / name)
    shutil.copytree(model / "tokenizer_2", tokenizers / "google_t5-v1_1-xxl")


# --- orchestration (loraforge's environment) ------------------------------------------------------------------------


@dataclass
class Arm:
    family: str
    backend: str
    mode: str  # orchestrated | direct
    status: str = "not run"  # ok | failed | skipped
    reason: str = ""
    steps: int = 0
    s_per_step: float | None = None  # median of the step times after the warm-up
    step_times: list[float] = field(default_factory=list)
    trainer_s_per_step: float | None = None  # median of the trainer's own readings over the same steps
    first_step_s: float | None = None  # from launch to the first step
    wall_s: float | None = None
    peak_gpu_mib: float | None = None
    peak_ram_mib: float | None = None
    log: str = ""


def model_for(family: str, scale: str, device: str, cache: Path, python: Path, sd_scripts: Path | None) -> Path:
    cfg = json.dumps(
        {"family": family, "scale": scale, "device": device, "v": BUILDER_VERSION, "cfg": configs(family, scale)}
    )
    out = cache / f"{family}-{scale}-{hashlib.sha256(cfg.encode()).hexdigest()[:12]}"
    if out.is_dir():
        print(f"{family}: cached model {out}", flush=True)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(python), str(Path(__file__).resolve()), "--build", family, "--scale", scale, "--device", device]
    argv += ["--out", str(out)] + (["--sd-scripts", str(sd_scripts)] if sd_scripts else [])
    start = time.monotonic()
    subprocess.run(argv, check=True)
    print(f"{family}: built in {time.monotonic() - start:.0f} s: {out}", flush=True)
    return out


def read_once(model: Path) -> float:
    """Read every file of the model once, so the first run does not pay for a cold page cache that later runs
    (the direct one, the other backend) find warm; the seconds it took."""
    start = time.monotonic()
    for path in sorted(p for p in model.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            while f.read(1 << 24):
                pass
    return time.monotonic() - start


def job_file(folder: Path, family: str, model: Path, data: Path, steps: int, resolution: int, backend: str) -> Path:
    import yaml

    job: dict[str, Any] = {
        "name": f"bench-{family}-{backend}",
        "base_model": str(model),
        "family": family,
        "dataset": str(data),
        "trigger": "ohwx person",
        "add_trigger": True,
        "training": {"steps": steps, "resolution": resolution, "batch_size": 1},  # over the preset: batch 1
        "output": {"dir": str(folder / "runs")},
    }
    if family == "flux" and backend == "kohya":
        first = sorted((model / "transformer").glob("*.safetensors"))[0]  # sd-scripts finds the other shards
        job["base_model"] = str(first)
        job["backend_args"] = {
            "kohya": {
                "clip_l": str(model / "text_encoder" / "model.safetensors"),
                "t5xxl": str(model / "text_encoder_2" / "model.safetensors"),
                "ae": str(model / "kohya" / "ae.safetensors"),
                "tokenizer_cache_dir": str(model / "kohya" / "tokenizers"),
            }
        }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    return path


class Timer:
    """Times progress readings as they arrive: the wall time between two steps, per step."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.last: tuple[int, float] | None = None
        self.first: float | None = None
        self.times: list[float] = []
        self.readings: list[float] = []  # the trainer's own s/step at each step (bar average, webhook figure)
        self.lock = threading.Lock()

    def progress(self, step: int, it_per_s: float | None) -> None:
        now = time.monotonic()
        with self.lock:
            if self.last is not None and step <= self.last[0]:
                return
            if self.first is None:
                self.first = now - self.start
            if self.last is not None:
                self.times.append((now - self.last[1]) / (step - self.last[0]))
            self.last = (step, now)
            if it_per_s:
                self.readings.append(1 / it_per_s)


def run_timed(
    argv: list[str], cwd: Path, env: dict[str, str], log: Path, on_line: Any, timeout: float
) -> tuple[int, Any]:
    """Run ``argv`` with both pipes drained line by line into ``log`` and ``on_line(stream, bytes)``, sampling its
    process tree's peak RAM and GPU memory; the exit status and the peaks."""
    from orchestrator.compare.monitor import TreeMonitor

    visible = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] if env.get("LORAFORGE_DEVICE") != "cpu" else None
    with log.open("wb") as sink:
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        monitor = TreeMonitor(child.pid, gpu=visible)
        lock = threading.Lock()

        def drain(stream: Any, name: str) -> None:
            for chunk in iter(lambda: stream.read1(65536), b""):
                with lock:
                    sink.write(chunk)
                on_line(name, chunk)

        threads = [
            threading.Thread(target=drain, args=(p, n), daemon=True)
            for p, n in ((child.stdout, "stdout"), (child.stderr, "stderr"))
        ]
        for t in threads:
            t.start()
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            code = -9
        for t in threads:
            t.join(timeout=10)
        return code, monitor.stop()


def run_arm(arm: Arm, argv: list[str], cwd: Path, env: dict[str, str], log: Path, warmup: int, timeout: float) -> None:
    from backends import base
    from orchestrator.events import Progress, event_from_dict

    start = time.monotonic()
    timer = Timer(start)
    parser = base.get(arm.backend).parser()
    pending = {"stdout": b""}

    def on_chunk(stream: str, data: bytes) -> None:
        if arm.mode == "orchestrated":  # loraforge --json: one event per stdout line
            if stream != "stdout":
                return
            lines = (pending["stdout"] + data).split(b"\n")
            pending["stdout"] = lines.pop()
            for line in lines:
                try:
                    event = event_from_dict(json.loads(line))
                except ValueError:
                    continue
                if isinstance(event, Progress):
                    timer.progress(event.step, event.it_per_s)
        else:
            for event in parser.feed(data, stream):
                if isinstance(event, Progress):
                    timer.progress(event.step, event.it_per_s)

    code, peaks = run_timed(argv, cwd, env, log, on_chunk, timeout)
    arm.wall_s = round(time.monotonic() - start, 1)
    arm.log = str(log)
    arm.steps = len(timer.times) + (1 if timer.last else 0)
    arm.step_times = [round(t, 4) for t in timer.times]
    arm.first_step_s = round(timer.first, 1) if timer.first is not None else None
    # the last reading can arrive with the end of the run (a bar step drawn once is reported when the bar closes)
    measured = timer.times[warmup:-1]
    arm.s_per_step = round(statistics.median(measured), 4) if measured else None
    own = timer.readings[warmup + 1 : -1]
    arm.trainer_s_per_step = round(statistics.median(own), 4) if own else None
    arm.peak_gpu_mib = round(peaks.gpu_bytes / 2**20) if peaks.gpu_bytes else None
    arm.peak_ram_mib = round(peaks.ram_bytes / 2**20) if peaks.ram_bytes else None
    if code == 0 and arm.s_per_step is not None:
        arm.status = "ok"
    else:
        arm.status = "failed"
        tail = log.read_bytes()[-4000:].decode("utf-8", "replace").replace("\r", "\n").splitlines()
        lines = [line for line in tail if line.strip()]
        errors = [line for line in lines if "rror" in line or "fix:" in line]
        why = f"exit {code}" if code != 0 else f"only {len(timer.times)} step times (warm-up {warmup}, last dropped)"
        arm.reason = f"{why}: {(errors or lines or [''])[-1].strip()[:300]}"


def gpu_name(device: str) -> str:
    if device == "cpu":
        return "cpu"
    from orchestrator.speed import nvsmi

    gpu = nvsmi.pick(nvsmi.query_gpus(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    return gpu.name if gpu else "unknown GPU"


def short_card(name: str) -> str:
    """The table's name for a card: nvidia-smi's without the vendor words, memory size and form factor."""
    import re

    words = [w for w in re.split(r"[\s\-]+", name) if w.lower() not in ("nvidia", "geforce", "tesla", "quadro")]
    kept = [w for w in words if not re.fullmatch(r"\d+GB|PCIe|SXM\d*|HBM\d*e?|NVL", w, re.IGNORECASE)]
    return " ".join(kept) or name


def rows(arms: list[Arm], card: str, resolution: int, steps: int, warmup: int) -> list[str]:
    """expected.tsv rows from the direct runs (the backend's own speed), the orchestrated figure in the notes."""
    out = []
    for arm in arms:
        if arm.mode != "direct" or arm.status != "ok":
            continue
        twin = next(
            (a for a in arms if a.mode == "orchestrated" and (a.family, a.backend) == (arm.family, arm.backend)), None
        )
        orchestrated = f"; orchestrated {twin.s_per_step} s/step" if twin and twin.s_per_step else ""
        peak = f"{arm.peak_gpu_mib / 1024:.2f}" if arm.peak_gpu_mib else ""
        preset = f"loraforge face-{arm.family} preset (bf16, gradient checkpointing, cached latents)"
        notes = (
            f"{preset}, random-initialised full-size weights, median of steps {warmup + 2}-{steps}{orchestrated}; "
            "peak_gib is nvidia-smi's per-process memory (CUDA context and allocator cache included)"
        )
        source = f"measured with benchmarks/bench_gpu.py on {card}"
        fields = [short_card(card), arm.family, arm.backend, str(resolution), "1", "1", "yes", "bf16"]
        out.append("\t".join([*fields, f"{arm.s_per_step:g}", peak, "warm", source, notes]))
    return out


def markdown(arms: list[Arm], card: str, args: argparse.Namespace) -> str:
    lines = [
        f"Card: {card}; scale {args.scale}; {args.resolution} px, batch 1, face preset; {args.steps} steps, "
        f"median of the step times after {args.warmup} warm-up steps (the last left out): wall time between progress "
        "readings as they arrive; trainer's own: the median of what its bar or webhooks said over the same steps.",
        "",
        "| family | backend | mode | status | s/step | trainer's own s/step | first step (s) | wall (s) | peak GPU (GiB) | peak RAM (GiB) |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for a in arms:
        own = f"{a.trainer_s_per_step or ''}"
        gpu = f"{a.peak_gpu_mib / 1024:.2f}" if a.peak_gpu_mib else ""
        ram = f"{a.peak_ram_mib / 1024:.2f}" if a.peak_ram_mib else ""
        status = a.status if not a.reason else f"{a.status}: {a.reason}"
        cells = [a.family, a.backend, a.mode, status.replace("|", "/"), f"{a.s_per_step or ''}", own]
        cells += [f"{a.first_step_s or ''}", f"{a.wall_s or ''}", gpu, ram]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="sdxl,flux", help="sdxl, flux, sd15 (comma-separated)")
    parser.add_argument("--backends", default="kohya,simpletuner")
    parser.add_argument("--modes", default="orchestrated,direct")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="step times left out of the median")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--scale", choices=["full", "tiny"], default="full")
    parser.add_argument("--resolution", type=int, help="default: 1024 (full), 64 (tiny)")
    parser.add_argument("--cache", type=Path, help="built models (default: loraforge's cache folder, bench/)")
    parser.add_argument("--out", type=Path, help="results folder (default: runs/bench-gpu-TIME)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    # the builder, run by this script with a backend environment's interpreter
    parser.add_argument("--build", help=argparse.SUPPRESS)
    parser.add_argument("--sd-scripts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build:
        build(args.build, args.scale, args.out, args.device, args.sd_scripts)
        return 0

    sys.path.insert(0, str(REPO))
    from backends import base
    from orchestrator.envs import cache_dir, get_env
    from orchestrator.tiny.dataset import make_dataset

    families = [f for f in args.families.split(",") if f]
    backends = [b for b in args.backends.split(",") if b]
    modes = [m for m in args.modes.split(",") if m]
    unknown = [f for f in families if f not in PUBLISHED]
    if unknown:
        parser.error(
            f"no published-config builder here for {', '.join(unknown)} (this script builds {', '.join(PUBLISHED)})"
        )
    args.resolution = args.resolution or (1024 if args.scale == "full" else 64)
    out = (args.out or REPO / "runs" / f"bench-gpu-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = (args.cache or cache_dir() / "bench").resolve()
    envs = {b: get_env(b) for b in backends}  # BackendNotReady names `loraforge setup B`
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    if args.device == "cpu":
        env["LORAFORGE_DEVICE"] = "cpu"
    card = gpu_name(args.device)
    data = make_dataset(out / "data", count=4, size=args.resolution)
    print(f"card: {card}; {families} x {backends} x {modes}, {args.steps} steps at {args.resolution} px", flush=True)

    arms: list[Arm] = []
    for family in families:
        trainable = [b for b in backends if family in base.get(b).families]
        runnable = [b for b in trainable if not (args.scale == "tiny" and (b, family) in TINY_SKIPS)]
        for b in backends:
            if b not in runnable:
                why = (
                    TINY_SKIPS.get((b, family))
                    if b in trainable
                    else f"loraforge's {b} backend does not train {family}"
                )
                arms += [Arm(family, b, m, status="skipped", reason=why or "") for m in modes]
        if not runnable:
            continue
        builder = envs["kohya"] if "kohya" in runnable else envs[runnable[0]]  # the older stack writes what both read
        sd_scripts = envs["kohya"].root if "kohya" in runnable else None
        model = model_for(family, args.scale, args.device, cache, builder.python, sd_scripts)
        print(
            f"{family}: model files read once in {read_once(model):.0f} s (page cache warm for every run)", flush=True
        )
        for b in runnable:
            folder = out / f"{family}-{b}"
            job = job_file(folder, family, model, data, args.steps, args.resolution, b)
            for mode in modes:
                arm = Arm(family, b, mode)
                arms.append(arm)
                if mode == "orchestrated":
                    argv = [sys.executable, "-m", "orchestrator.cli", "train", str(job), "--backend", b]
                    argv += ["--preset", f"face-{family}", "--json"]
                    run_arm(arm, argv, REPO, env, folder / "orchestrated.log", args.warmup, args.timeout)
                else:
                    runs = sorted((folder / "runs").glob("*/rendered/command.txt"))
                    if not runs:
                        arm.status, arm.reason = "skipped", "no orchestrated run to take rendered/command.txt from"
                        continue
                    run = runs[-1].parent.parent
                    if (run / "output").exists():  # the direct run writes where the orchestrated one did
                        shutil.rmtree(run / "output-orchestrated", ignore_errors=True)
                        (run / "output").rename(run / "output-orchestrated")
                    command = runs[-1].read_text(encoding="utf-8").strip()
                    run_arm(arm, ["bash", "-c", command], run, env, folder / "direct.log", args.warmup, args.timeout)
                print(f"{family} {b} {mode}: {arm.status} {arm.s_per_step} s/step {arm.reason}", flush=True)

    report = {"card": card, "args": {k: str(v) for k, v in vars(args).items()}, "arms": [asdict(a) for a in arms]}
    (out / "results.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    table = markdown(arms, card, args)
    (out / "results.md").write_text(table, encoding="utf-8")
    if args.device == "cuda" and args.scale == "full":
        (out / "rows.tsv").write_text(
            "".join(r + "\n" for r in rows(arms, card, args.resolution, args.steps, args.warmup))
        )
    print(table)
    print(f"results in {out}")
    return 0 if all(a.status != "failed" for a in arms) else 1


if __name__ == "__main__":
    sys.exit(main())
