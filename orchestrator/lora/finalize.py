"""The final LoRA of a run: the asked layout, written atomically, with loraforge's metadata beside the backend's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from orchestrator import __version__
from orchestrator.envs import BackendEnv
from orchestrator.job import JobSpec
from orchestrator.lora import keys as K
from orchestrator.lora.convert import diffusers_to_kohya, kohya_to_diffusers
from orchestrator.lora.safetensors_io import read, write

IMAGES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def dataset_fingerprint(folder: Path) -> tuple[str, int]:
    """A hash over the dataset's images and captions (names and bytes), and the image count."""
    digest = hashlib.sha256()
    count = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() in IMAGES or path.suffix == ".txt":
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
            count += path.suffix.lower() in IMAGES
    return digest.hexdigest()[:16], count


def loraforge_metadata(job: JobSpec, backend: str, env: BackendEnv) -> dict[str, str]:
    data_hash, images = dataset_fingerprint(Path(job.dataset))
    backend_version = env.versions.get(backend) or env.versions.get("sd-scripts") or env.versions.get("simpletuner", "")
    return {
        "loraforge_version": __version__,
        "loraforge_trigger": job.trigger or "",
        "loraforge_base_model": job.base_model,
        "loraforge_family": job.family or "",
        "loraforge_network": json.dumps({"type": job.network.type, "rank": job.network.rank, "alpha": job.alpha}),
        "loraforge_steps": str(job.training.steps),
        "loraforge_backend": backend,
        "loraforge_backend_version": backend_version,
        "loraforge_dataset_hash": data_hash,
        "loraforge_dataset_images": str(images),
        # the keys tools already show in their LoRA browsers
        "ss_output_name": job.lora_name,
        "modelspec.trigger_phrase": job.trigger or "",
    }


def finalize_lora(job: JobSpec, backend: str, env: BackendEnv, src: Path, target: Path) -> Path:
    tensors, metadata = read(src)
    layout = K.layout(list(tensors))
    if layout != job.saving.format:
        convert = kohya_to_diffusers if job.saving.format == "diffusers" else diffusers_to_kohya
        tensors, metadata = convert(tensors, metadata)
    metadata = {**metadata, **loraforge_metadata(job, backend, env)}
    return write(target, tensors, metadata)
