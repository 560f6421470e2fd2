"""JobSpec -> SimpleTuner's config.json and multidatabackend.json values, and the checks on them.

Facts this relies on (SimpleTuner 4.10.1, verified on CPU; see the project's reference notes):
- on CPU: ``vae_cache_ondemand`` (else a CUDA pin_memory path crashes), the model's own VAE (the default is a hub
  id), validation off (previews fetch a hub model), optimi-adamw (adamw_schedulefree crashes), no mixed precision;
- captions come from the run copy's ``.txt`` files (``caption_strategy: textfile``), which already hold the trigger;
  the dataset's ``instance_prompt`` only names it (SimpleTuner records it as the LoRA's trigger word);
- ``repeats`` counts extra passes (0 = each image once), where the JobSpec counts passes;
- LyCORIS (``lora_type: lycoris``) reads its algorithm and dimensions from a JSON file (``lycoris_config``);
- what a model family needs beyond ``model_family`` (flavour, text length) and ignores: families.py.
"""

from __future__ import annotations

import difflib
import math
import random
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.simpletuner.families import family_options
from orchestrator.dataset.model import Dataset, DatasetImage
from orchestrator.errors import LoraforgeError
from orchestrator.job import JobSpec
from orchestrator.steps import held_out_count, validation_interval
from orchestrator.userpath import user_path

OPTIMIZERS = {  # JobSpec optimizer -> SimpleTuner optimizer (GPU); CPU swaps adamw for optimi-adamw
    "adamw": "adamw_bf16",
    "adamw8bit": "bnb-adamw8bit",
    "adafactor": "torch-adafactor",
    "prodigy": "prodigy",
    "lion": "optimi-lion",
    "sgd": "optimi-sgd",
}
PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}
# JobSpec network types SimpleTuner trains through LyCORIS, as LyCORIS names the algorithm. LoCon is LyCORIS'
# "lora" algorithm with the convolutions included (its preset below); plain "lora" stays PEFT's LoRA.
LYCORIS_ALGOS = {"locon": "lora", "loha": "loha", "lokr": "lokr"}
# The blocks LyCORIS wraps (every Linear and Conv inside them): attention, feed-forward and the ResNet convolutions,
# as sd-scripts' LyCORIS module targets them; convolutions at conv_dim (default: the rank).
_LYCORIS_MODULES = ["Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D"]
LYCORIS_ARGS = {
    "conv_dim",
    "conv_alpha",
    "factor",
    "dora_wd",
    "use_tucker",
    "use_scalar",
    "rank_dropout",
    "module_dropout",
}


@dataclass
class Options:
    """What one render writes: config.json, the data backends, the LyCORIS file (None for a plain LoRA), notes."""

    config: dict[str, Any]
    datasets: list[dict[str, Any]]
    lycoris: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def split_dataset(dataset: Dataset, job: JobSpec) -> tuple[list[DatasetImage], list[DatasetImage]]:
    """(trained on, held out for validation loss): a seeded draw by image name, the same on every render of the
    job; at least one held out and one left to train on when a split is asked for."""
    share = job.training.validation_split
    count = held_out_count(dataset.count, share, "simpletuner")
    if share and not count:
        raise LoraforgeError(
            f"training.validation_split={share}: {dataset.root} has too few images ({dataset.count}) to hold any out",
            "add images (two at least), or set training.validation_split=0",
        )
    names = set(random.Random(job.training.seed).sample(sorted(i.name for i in dataset.images), count))
    return [i for i in dataset.images if i.name not in names], [i for i in dataset.images if i.name in names]


def map_options(
    job: JobSpec,
    *,
    cpu: bool,
    offline: bool,
    data: Path,
    held_out: Path | None,
    cache: Path,
    out: Path,
    lycoris_file: Path,
) -> Options:
    """The values for one run. ``held_out``: the folder of validation images, None without a split."""
    t, n, s = job.training, job.network, job.saving
    notes: list[str] = []

    optimizer = OPTIMIZERS.get(t.optimizer)
    if optimizer is None:
        optimizer = "optimi-adamw"
        notes.append(f"training.optimizer={t.optimizer} has no SimpleTuner equivalent; using optimi-adamw")
    if t.optimizer == "adamw" and (cpu or t.precision != "bf16"):
        optimizer = "optimi-adamw" if cpu else "torch-adamw"
    if cpu and optimizer.startswith("bnb-"):
        notes.append(f"training.optimizer={t.optimizer}: bitsandbytes needs CUDA; using optimi-adamw on CPU")
        optimizer = "optimi-adamw"
    precision = PRECISION[t.precision]
    if cpu and precision != "no":
        notes.append(f"training.precision={t.precision}: no mixed precision on CPU; training in fp32")
        precision = "no"

    config: dict[str, Any] = {
        "model_family": job.family,
        "model_type": "lora",
        "lora_type": "standard",
        "lora_rank": n.rank,
        "lora_alpha": job.alpha,
        "pretrained_model_name_or_path": job.base_model,
        "output_dir": str(out),
        "max_train_steps": t.steps or 0,
        "num_train_epochs": 0 if t.steps else (t.epochs or 0),  # explicit steps always decide the length
        "learning_rate": t.learning_rate,
        "lr_scheduler": t.scheduler,
        "lr_warmup_steps": t.warmup_steps,
        "optimizer": optimizer,
        "mixed_precision": precision,
        "base_model_precision": "no_change",
        "train_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation,
        "resolution": t.resolution,
        "resolution_type": "pixel",
        "seed": t.seed,
        "gradient_checkpointing": t.gradient_checkpointing,
        "report_to": "none",
        "push_to_hub": False,
        "use_ema": False,
    }
    family = family_options(job, offline=offline)  # flavour, text length, what the family ignores
    config.update(family.config)
    notes += family.notes
    if t.steps and t.epochs:
        notes.append(f"training.epochs={t.epochs} ignored: training.steps={t.steps} decides the length")
    if n.dropout is not None:
        config["lora_dropout"] = n.dropout
    if s.every_n_steps is not None:
        config["checkpoint_step_interval"] = s.every_n_steps
    if s.keep_last is not None:
        config["checkpoints_total_limit"] = s.keep_last
    lycoris = _network(job, config, notes, lycoris_file)
    if t.text_encoder_lr:
        notes.append(f"training.text_encoder_lr={t.text_encoder_lr}: SimpleTuner LoRA trains the UNet only here")
    if not t.cache_latents:
        notes.append("training.cache_latents=false: SimpleTuner always caches VAE latents (on demand on CPU)")
    if t.shuffle_captions:
        notes.append("training.shuffle_captions: SimpleTuner does not shuffle caption tags; captions train as written")

    _validation(job, config, notes, cpu=cpu, offline=offline, local_model=user_path(job.base_model).is_dir())
    if held_out is not None:
        # Held-out images in their own "eval" dataset; SimpleTuner computes their loss every eval_steps_interval and
        # reports it only to a tracker: "simpletuner" writes it to training_metrics.jsonl, which the run watches.
        config["validation_disable"] = False  # the Evaluation object exists only with validation on
        config["eval_steps_interval"] = validation_interval(job)
        config["report_to"] = "simpletuner"
        if cpu or offline:  # validation images stay off: on CPU their pipeline needs >20 GB even for the tiny model
            config["validation_step_interval"] = (t.steps or 0) + 1_000_000

    config.update(job.backend_args.get("simpletuner", {}))
    _finite(config)

    images: dict[str, Any] = {
        "id": "loraforge-images",
        "type": "local",
        "instance_data_dir": str(data),
        "caption_strategy": "textfile",
        "crop": False,
        "resolution": t.resolution,
        "resolution_type": "pixel",
        "minimum_image_size": min(64, t.resolution),
        "repeats": t.repeats - 1,
        "cache_dir_vae": str(cache / "vae"),
    }
    if job.trigger:
        images["instance_prompt"] = job.trigger
    if cpu:
        images["vae_cache_ondemand"] = True
    datasets = [images]
    if held_out is not None:
        datasets.append(
            {
                **images,
                "id": "loraforge-eval",
                "dataset_type": "eval",
                "instance_data_dir": str(held_out),
                "cache_dir_vae": str(cache / "vae-eval"),
                "repeats": 0,
            }
        )
    datasets.append(
        {
            "id": "text-embeds",
            "dataset_type": "text_embeds",
            "default": True,
            "type": "local",
            "cache_dir": str(cache / "text"),
        }
    )
    return Options(config, datasets, lycoris, notes)


def _network(job: JobSpec, config: dict[str, Any], notes: list[str], lycoris_file: Path) -> dict[str, Any] | None:
    """PEFT's LoRA for network.type lora; LyCORIS for locon, loha and lokr on SDXL (its own config file, with the
    LyCORIS arguments of network.args); anything else is a note and a standard LoRA."""
    n = job.network
    algo = LYCORIS_ALGOS.get(n.type)
    if n.type != "lora" and (algo is None or job.family != "sdxl"):
        where = "" if algo is None else f" for {job.family}"
        notes.append(f"network.type={n.type}: not available through SimpleTuner{where} here; training a standard LoRA")
        algo = None
    passed = {k: v for k, v in n.args.items() if k in LYCORIS_ARGS} if algo else {}
    if set(n.args) - set(passed):
        notes.append(
            f"network.args {sorted(set(n.args) - set(passed))}: not passed to SimpleTuner (it takes LyCORIS' "
            f"{', '.join(sorted(LYCORIS_ARGS))} for locon, loha and lokr)"
        )
    if algo is None:
        return None
    config["lora_type"] = "lycoris"
    config["lycoris_config"] = str(lycoris_file)
    for key in ("lora_rank", "lora_alpha", "lora_dropout"):  # PEFT's; LyCORIS reads its own from the file
        config.pop(key, None)
    if not float(job.alpha).is_integer():
        notes.append(f"network.alpha={job.alpha}: SimpleTuner reads LyCORIS' alpha as a whole number: {int(job.alpha)}")
    if job.saving.format == "diffusers":
        notes.append(f"saving.format=diffusers: a {n.type} network has no diffusers layout; saved in Kohya's")
    lycoris: dict[str, Any] = {
        "algo": algo,
        "multiplier": 1.0,
        "linear_dim": n.rank,
        "linear_alpha": max(1, int(job.alpha)),
        "apply_preset": {"target_module": _LYCORIS_MODULES},
    }
    if n.dropout is not None:
        lycoris["dropout"] = n.dropout
    lycoris.update(passed)
    return lycoris


def _validation(
    job: JobSpec, config: dict[str, Any], notes: list[str], *, cpu: bool, offline: bool, local_model: bool
) -> None:
    """Validation images: off on CPU or offline (their pipeline fetches a hub model); else every
    sampling.every_n_steps with the first prompt, or the trigger when no prompt is given."""
    sampling = job.sampling
    if cpu or offline:
        if local_model:
            config["pretrained_vae_model_name_or_path"] = job.base_model
        config["validation_disable"] = True
        config["disable_benchmark"] = True
        if sampling.every_n_steps:
            why = "on CPU" if cpu else "offline (HF_HUB_OFFLINE)"
            notes.append(f"sampling.every_n_steps={sampling.every_n_steps}: SimpleTuner validation is off {why}")
        return
    prompt = sampling.prompts[0] if sampling.prompts else job.trigger
    if not sampling.every_n_steps or not prompt:
        if sampling.every_n_steps:
            notes.append(
                "sampling.every_n_steps: no prompt and no trigger to sample with; SimpleTuner validation is off"
            )
        config["validation_disable"] = True
        return
    config["validation_step_interval"] = sampling.every_n_steps
    config["validation_prompt"] = prompt
    config["validation_seed"] = sampling.seed
    config["validation_num_inference_steps"] = sampling.steps
    if len(sampling.prompts) > 1:
        notes.append("sampling.prompts: SimpleTuner's config takes one validation prompt; using the first")


def _finite(config: dict[str, Any]) -> None:
    """JSON has no Infinity or NaN: SimpleTuner would read a non-standard file, or fail late."""
    for key, value in config.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise LoraforgeError(
                f"backend_args.simpletuner.{key}={value!r} is not a finite number", "give a finite number, or remove it"
            )


# --- SimpleTuner's own option names -------------------------------------------------------------------------

_OPTIONS: dict[str, frozenset[str] | None] = {}


def known_options(python: Path) -> frozenset[str] | None:
    """The option names of the installed SimpleTuner, read from its field registry's source (nothing imported,
    so this is quick); None where that registry is not found (another SimpleTuner layout): then nothing is checked."""
    if str(python) in _OPTIONS:
        return _OPTIONS[str(python)]
    code = "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('simpletuner').origin))"
    names: frozenset[str] | None = None
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
        sections = Path(out.stdout.strip()) / "simpletuner_sdk/server/services/field_registry/sections"
        if out.returncode == 0 and sections.is_dir():
            found: set[str] = set()
            for source in sections.glob("*.py"):
                found.update(re.findall(r'\bname="([a-z0-9_]+)"', source.read_text(encoding="utf-8")))
            names = frozenset(found) or None
    except (OSError, subprocess.TimeoutExpired):
        names = None
    _OPTIONS[str(python)] = names
    return names


def reject_unknown_options(config: dict[str, Any], python: Path) -> None:
    """Typos in backend_args.simpletuner are caught before launching (SimpleTuner would ignore or fail late)."""
    names = known_options(python)
    if names is None:
        return
    unknown = [key for key in config if key not in names]
    if unknown:
        guesses = [
            f"{key} (did you mean {', '.join(difflib.get_close_matches(key, names, 2)) or '?'})" for key in unknown
        ]
        raise LoraforgeError(
            f"unknown SimpleTuner option(s) in backend_args.simpletuner: {'; '.join(guesses)}",
            "fix or remove them; the names are SimpleTuner's config keys without the leading --",
        )
