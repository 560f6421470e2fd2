"""A JobSpec in sd-scripts' terms: the options of its ``--config_file``, the network module, the accelerate config.

Two layers, so preset export and a run say the same thing the same way:
- :func:`training_options`: what the job's settings mean to sd-scripts, with no path and nothing that depends on
  this machine (what ``loraforge presets export`` writes);
- :func:`build_options`: those plus what one run adds (model, dataset config and output folders, the device, resume,
  sampling, validation, ``backend_args.kohya``), written into the run's config.toml.

The option functions read only their arguments (and the data files beside this module) and return values;
rendering writes the files. render_accelerate alone looks around: a free port, and Slurm's node placement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from backends.base import Resume
from backends.kohya.families import family, family_options
from orchestrator.distributed import free_port, node_placement
from orchestrator.errors import LoraforgeError
from orchestrator.job import JobSpec
from orchestrator.render import render_template
from orchestrator.secrets import HOW_TO_PASS, is_secret
from orchestrator.steps import validation_interval

# --- sd-scripts' own options and its optimizers: data files beside this module -------------------------------------


@cache
def sd_scripts_options() -> dict[str, tuple[str, Any]]:
    """sd-scripts option name -> (type, default), at the commit named in sd_scripts_options.txt: what a checkout
    without an options dump is assumed to accept, and how preset import types a value."""
    options: dict[str, tuple[str, Any]] = {}
    for line in Path(__file__).with_name("sd_scripts_options.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind, default = line.split("\t")
            options[name] = (kind, json.loads(default))
    return options


@cache
def any_script_option(name: str) -> tuple[str, Any] | None:
    """(type, default) of an option of train_network.py or of any family script (sd3_train_network.py's
    weighting_scheme, flux_train_network.py's guidance_scale ...), or None when no script has it."""
    if name in sd_scripts_options():
        return sd_scripts_options()[name]
    return next((options[name] for options in script_options().values() if name in options), None)


def script_options() -> dict[str, dict[str, tuple[str, Any]]]:
    """Per family script, the options it adds to train_network.py's (sd_scripts_script_options.txt), typed the same
    way: what a checkout without an options dump is assumed to accept for that script."""
    options: dict[str, dict[str, tuple[str, Any]]] = {}
    for line in Path(__file__).with_name("sd_scripts_script_options.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            script, name, kind, default = line.split("\t")
            options.setdefault(script, {})[name] = (kind, json.loads(default))
    return options


@dataclass(frozen=True)
class Optimizer:
    name: str  # loraforge's training.optimizer
    sd_scripts: str  # optimizer_type as rendered and exported
    also: tuple[str, ...]  # other optimizer_type spellings that mean the same optimizer


@cache
def optimizers() -> tuple[Optimizer, ...]:
    rows = []
    for line in (Path(__file__).with_name("optimizers.tsv")).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith(("#", "loraforge\t")):
            continue
        name, sd_scripts, also = (line.split("\t") + [""])[:3]
        rows.append(Optimizer(name, sd_scripts, tuple(a.strip() for a in also.split(",") if a.strip())))
    return tuple(rows)


def sd_scripts_optimizer(name: str) -> str:
    """optimizer_type for a loraforge optimizer name."""
    return next(o.sd_scripts for o in optimizers() if o.name == name)


def loraforge_optimizer(optimizer_type: str) -> str | None:
    """The loraforge optimizer an sd-scripts optimizer_type names (any case), or None when loraforge has none."""
    wanted = optimizer_type.strip().lower()
    for optimizer in optimizers():
        if wanted in (s.lower() for s in (optimizer.name, optimizer.sd_scripts, *optimizer.also)):
            return optimizer.name
    return None


# --- secrets ------------------------------------------------------------------------------------------------------


def refuse_secrets(options: dict[str, Any], where: str) -> None:
    """A secret-named option is refused by name (its value is never shown): files loraforge writes are read by
    people it is shared with, and rendered files outlive the run."""
    secrets = sorted(name for name in options if is_secret(name))
    if secrets:
        raise LoraforgeError(
            f"{where}.{secrets[0]} holds a secret, which would be written into a file"
            + (f" (and {', '.join(secrets[1:])})" if secrets[1:] else ""),
            f"remove it and {HOW_TO_PASS}",
        )


# --- the options --------------------------------------------------------------------------------------------------


def network_settings(job: JobSpec) -> tuple[str, list[str]]:
    """network_module and network_args for the job's network type: plain LoRA through the family's own module
    (families.toml), LyCORIS types through lycoris.kohya."""
    args = [f"{k}={v}" for k, v in job.network.args.items()]
    kind = job.network.type
    if kind == "lora":
        return family(job.family).network_module, args
    if kind == "dylora":
        return "networks.dylora", args
    return "lycoris.kohya", [f"algo={kind}", *args]


def training_options(job: JobSpec) -> dict[str, Any]:
    """The job's settings as sd-scripts options, in a readable order, then what its family needs (families.toml):
    no path, nothing about this machine. Booleans are written either way, so a file read back means the same job."""
    return family_options(job, _job_options(job))[0]


def _job_options(job: JobSpec) -> dict[str, Any]:
    training = job.training
    module, network_args = network_settings(job)
    options: dict[str, Any] = {"network_module": module, "network_dim": job.network.rank, "network_alpha": job.alpha}
    if job.output.name:
        options["output_name"] = job.output.name
    if network_args:
        options["network_args"] = network_args
    if job.network.dropout:
        options["network_dropout"] = job.network.dropout
    options["learning_rate"] = training.learning_rate
    options["unet_lr"] = training.learning_rate
    if training.text_encoder_lr:
        options["text_encoder_lr"] = training.text_encoder_lr
    else:
        options["network_train_unet_only"] = True  # without it sd-scripts trains the text encoder at learning_rate
    if training.steps is not None:
        options["max_train_steps"] = training.steps  # always explicit: never sd-scripts' hidden 1600-step default
    elif training.epochs is not None:
        options["max_train_epochs"] = training.epochs
    options["gradient_accumulation_steps"] = training.gradient_accumulation
    options["optimizer_type"] = sd_scripts_optimizer(training.optimizer)
    options["lr_scheduler"] = training.scheduler
    if training.warmup_steps:
        options["lr_warmup_steps"] = training.warmup_steps
    options["seed"] = training.seed
    options["mixed_precision"] = "no" if training.precision == "fp32" else training.precision
    options["gradient_checkpointing"] = training.gradient_checkpointing
    options["cache_latents"] = training.cache_latents
    if training.noise_offset:
        options["noise_offset"] = training.noise_offset
    if training.min_snr_gamma:
        options["min_snr_gamma"] = training.min_snr_gamma
    if job.saving.every_n_steps:
        options["save_every_n_steps"] = job.saving.every_n_steps
        options["save_state"] = True  # what `loraforge resume` continues from
        if job.saving.keep_last:
            options["save_last_n_steps"] = job.saving.every_n_steps * job.saving.keep_last
            options["save_last_n_steps_state"] = job.saving.every_n_steps * job.saving.keep_last
    if job.distributed.ddp_timeout_minutes:
        options["ddp_timeout"] = job.distributed.ddp_timeout_minutes
    return options


def build_options(
    job: JobSpec,
    *,
    rendered: Path,
    output: Path,
    tokenizers: Path | None,
    cpu: bool,
    resume: Resume | None,
    parts: dict[str, str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The run's config.toml options (its files in ``rendered``, sd-scripts' own output in ``output``, the model's
    files as parts.py resolved them), and notes on what sd-scripts cannot express here (never dropped)."""
    extra = job.backend_args.get("kohya", {})
    refuse_secrets(extra, "backend_args.kohya")
    notes: list[str] = []
    options: dict[str, Any] = {
        "pretrained_model_name_or_path": job.base_model,
        **(parts or {}),
        "dataset_config": str(rendered / "dataset.toml"),
        "output_dir": str(output),
        "output_name": job.lora_name,
        "save_model_as": "safetensors",
        "caption_extension": ".txt",
    }
    trained, family_notes = family_options(job, _job_options(job))
    options.update(trained)
    notes += family_notes
    notes += _cpu_precision(job, options) if cpu else []
    precision = options["mixed_precision"]
    options["save_precision"] = "float" if precision == "no" else precision
    options["max_data_loader_n_workers"] = 0 if cpu else 2
    if not cpu:
        options["sdpa"] = True
    if job.sampling.every_n_steps and job.sampling.prompts:
        options["sample_every_n_steps"] = job.sampling.every_n_steps
        options["sample_prompts"] = str(rendered / "prompts.txt")
        options["sample_sampler"] = "euler_a"
    if job.training.validation_split:
        options["validate_every_n_steps"] = validation_interval(job)
    if tokenizers is not None:
        options["tokenizer_cache_dir"] = str(tokenizers)
    if resume is not None:
        options["resume"] = str(resume.state)
        options["skip_until_initial_step"] = True  # --resume alone would start counting at step 0 again
    # caches on disk, in the run's copy of the dataset: what a later run on this machine reuses (backends/kohya/
    # caches.py); in memory alone they are computed again by every run (backend_args.kohya may still say false)
    if options.get("cache_latents"):
        options["cache_latents_to_disk"] = True
    if options.get("cache_text_encoder_outputs"):
        options["cache_text_encoder_outputs_to_disk"] = True
    for name in sorted(set(extra) & {"shuffle_caption", "keep_tokens"}):
        notes.append(
            f"backend_args.kohya.{name}: the dataset config decides it (training.shuffle_captions and the trigger)"
        )
    options.update(extra)
    for other in sorted(set(job.backend_args) - {"kohya"}):
        notes.append(f"backend_args.{other}: not used by the kohya backend")
    return options, notes


def _cpu_precision(job: JobSpec, options: dict[str, Any]) -> list[str]:
    """No mixed precision on CPU, except bf16 for the families whose text encoder sd-scripts loads in the training
    dtype (it would not fit in fp32); the job's own fp32 is kept. Sets ``options`` and says what changed."""
    spec, precision = family(job.family), job.training.precision
    if spec.bf16_on_cpu and precision == "fp32":
        return [f"training.precision=fp32 on CPU: {spec.bf16_on_cpu} (bf16 is the default here)"]
    if spec.bf16_on_cpu:
        options["mixed_precision"] = "bf16"
        return [f"training.precision={precision}: trained in bf16 on CPU ({spec.bf16_on_cpu})"]
    if precision != "fp32":
        options["mixed_precision"] = "no"
        return [f"training.precision={precision}: trained in fp32 (no mixed precision on CPU)"]
    return []


def unknown_options(job: JobSpec, known: frozenset[str]) -> None:
    """Refuse backend_args.kohya names the family's sd-scripts script does not have, before anything launches."""
    unknown = sorted(set(job.backend_args.get("kohya", {})) - known)
    if unknown:
        script = family(job.family).script
        raise LoraforgeError(
            f"backend_args.kohya: sd-scripts' {script} has no option {', '.join(unknown)}",
            f"check the spelling against `python {script} --help` in the sd-scripts folder",
        )


def dataset_values(job: JobSpec, image_dir: Path) -> dict[str, Any]:
    """The dataset config's values. The trigger is the first comma-separated token of every caption (preflight saw
    to that), so with shuffling on, keep_tokens = 1 keeps it in front."""
    shuffle = job.training.shuffle_captions
    return {
        "image_dir": str(image_dir),
        "resolution": job.training.resolution,
        "batch_size": job.training.batch_size,
        "repeats": job.training.repeats,
        "min_bucket": max(64, job.training.resolution // 4 // 64 * 64),
        "max_bucket": job.training.resolution * 2,
        "shuffle_caption": shuffle,
        "keep_tokens": 1 if job.trigger and shuffle else 0,
        "validation_split": job.training.validation_split,
        "seed": job.training.seed,
    }


def prompt_lines(job: JobSpec) -> str:
    """sd-scripts' prompt file: one prompt a line, the sampler's settings after `` --``. The job's own validation
    (Sampling.prompts) refuses a prompt with a line break, a `` --`` or a leading ``#``, which would change it. The
    family's own sampler settings (Chroma: no embedded guidance, a CFG scale) follow."""
    settings = f"--s {job.sampling.steps} --d {job.sampling.seed}"
    if family(job.family).sample_args:
        settings += " " + family(job.family).sample_args
    return "".join(f"{prompt} {settings}\n" for prompt in job.sampling.prompts)


def render_accelerate(job: JobSpec, *, cpu: bool) -> str:
    """Every accelerate setting written out; several processes use accelerate's torchrun launcher (MULTI_GPU)."""
    processes = job.distributed.gpus * job.distributed.nodes
    if cpu and processes > 1:
        # Measured (accelerate 1.6 and 1.15, 2 processes, gloo): on CPU accelerate wraps every prepared model in
        # DistributedDataParallel, the frozen U-Net that sd-scripts prepares included, and torch refuses one
        # without trainable parameters, on every rank. SimpleTuner prepares only the LoRA and trains.
        raise LoraforgeError(
            f"distributed.gpus={job.distributed.gpus}: sd-scripts cannot train with several CPU processes "
            "(accelerate wraps its frozen U-Net in DistributedDataParallel on CPU, which torch refuses)",
            "train with one process here (--gpus 1), use --backend simpletuner (SDXL, Flux) for several CPU "
            "processes, or a machine with that many GPUs",
        )
    one_node = job.distributed.nodes == 1
    machine_rank, main_ip = node_placement(job.distributed.nodes)
    return render_template(
        "accelerate.yaml.j2",
        distributed_type="MULTI_GPU" if processes > 1 else "NO",
        processes=processes,
        machines=job.distributed.nodes,
        machine_rank=machine_rank,
        main_ip=main_ip,
        # one node: any free port, so two runs on a machine never collide (accelerate 1.6 stops on a busy port);
        # several nodes: the port they all agree on
        port=free_port() if one_node and processes > 1 else 29500 + job.training.seed % 1000,
        mixed_precision="no" if cpu or job.training.precision == "fp32" else job.training.precision,
        use_cpu=cpu,
    )
