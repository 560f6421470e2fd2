"""The final LoRA of a run: the asked layout, written atomically, with loraforge's metadata beside the backend's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import __version__
from orchestrator.envs import BackendEnv
from orchestrator.job import JobSpec
from orchestrator.lora import keys as K
from orchestrator.lora.check import check_lora
from orchestrator.lora.convert import diffusers_to_kohya, kohya_to_diffusers
from orchestrator.lora.safetensors_io import read, write
from orchestrator.userpath import user_path

if TYPE_CHECKING:
    from orchestrator.dataset.model import Dataset
    from orchestrator.steps import StepPlan


def public_model_name(base_model: str) -> str:
    """How a LoRA names its base model: the hub id as given, or a local model's file or folder name only. A file
    people share must not carry the folder names of the machine it was trained on."""
    from orchestrator.preflight import looks_like_path

    if not looks_like_path(base_model):
        return base_model
    return user_path(base_model.rstrip("/\\")).name or base_model


def loraforge_metadata(job: JobSpec, backend: str, env: BackendEnv, dataset: Dataset, plan: StepPlan) -> dict[str, str]:
    """loraforge's facts about the run, from the same dataset and step plan the run used."""
    backend_version = env.versions.get(backend) or env.versions.get("sd-scripts") or env.versions.get("simpletuner", "")
    return {
        "loraforge_version": __version__,
        "loraforge_trigger": job.trigger or "",
        "loraforge_base_model": public_model_name(job.base_model),
        "loraforge_family": job.family or "",
        "loraforge_network": json.dumps({"type": job.network.type, "rank": job.network.rank, "alpha": job.alpha}),
        "loraforge_steps": str(job.training.steps),
        "loraforge_backend": backend,
        "loraforge_backend_version": backend_version,
        "loraforge_dataset_hash": dataset.fingerprint(),
        "loraforge_dataset_images": str(plan.images),  # the images trained on (held-out ones apart)
        "loraforge_dataset_held_out": str(plan.held_out),
        # the keys tools already show in their LoRA browsers
        "ss_output_name": job.lora_name,
        "modelspec.trigger_phrase": job.trigger or "",
    }


def finalize_lora(job: JobSpec, src: Path, target: Path, metadata: dict[str, str]) -> Path:
    tensors, existing = read(src)
    check_lora(src, tensors, existing)  # a trainer's broken file is refused, never passed on under our name
    if any(key.startswith("lycoris_") or ".hada_" in key or ".lokr_" in key for key in tensors):
        # A LyCORIS network (LoCon, LoHa, LoKr) has one layout tools read, Kohya's names: lora_unet_ + the module
        # path (SimpleTuner writes LyCORIS' own prefix; U-Net only). None for diffusers: saving.format cannot apply.
        tensors = {re.sub(r"^lycoris_", "lora_unet_", key): tensor for key, tensor in tensors.items()}
        return write(target, tensors, {**existing, **metadata})
    layout = K.layout(list(tensors))
    if layout != job.saving.format:
        convert = kohya_to_diffusers if job.saving.format == "diffusers" else diffusers_to_kohya
        # the job's family: a trainer's file may not say it (SimpleTuner's final LoRA has no modelspec entry), and
        # SD3, Flux and Qwen-Image LoRAs of attention modules alone look alike at small widths
        tensors, existing = convert(tensors, existing, job.family or None)
    return write(target, tensors, {**existing, **metadata})
