"""What a base model is: its family, read from its files where it is local (a diffusers folder's model_index.json,
or a single file's tensor names), else guessed from a hub id."""

from __future__ import annotations

import json
import re
from pathlib import Path

from orchestrator.userpath import user_path

_PIPELINES = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
    "FluxPipeline": "flux",
    "StableDiffusion3Pipeline": "sd3",
    "ChromaPipeline": "chroma",
    "Lumina2Pipeline": "lumina2",
    "Lumina2Text2ImgPipeline": "lumina2",
    "QwenImagePipeline": "qwen_image",
    "Flux2Pipeline": "flux2",
    "Flux2KleinPipeline": "flux2",
}

# A single file's family from tensor names only its family has (the original checkpoints' names, with or without
# ComfyUI's "model.diffusion_model." prefix, and diffusers' own), checked in this order: Chroma and Flux 2 are
# Flux-shaped, so their own markers come before Flux's.
_SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("flux2", ("single_stream_modulation.lin.", "double_stream_modulation_img.")),
    ("chroma", ("distilled_guidance_layer.",)),
    ("flux", ("double_blocks.", "single_transformer_blocks.")),
    ("sd3", ("joint_blocks.", "pos_embed.pos_embed")),
    ("lumina2", ("cap_embedder.", "context_refiner.")),
    ("qwen_image", ("img_mod.", "txt_mod.")),
    ("sdxl", ("conditioner.embedders.1", "add_embedding", "label_emb.")),
    ("sd15", ("model.diffusion_model.input_blocks", "cond_stage_model.transformer")),
)


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names in a .safetensors file, read from its header only (no tensor data loaded); a broken file
    is a LoraforgeError naming it."""
    from orchestrator.lora.safetensors_io import read_header

    entries, _, _ = read_header(path)
    return list(entries)


def family_from_keys(keys: list[str]) -> str | None:
    joined = "\n".join(keys[:5000])
    for family, markers in _SIGNATURES:
        if any(marker in joined for marker in markers):
            return family
    return None


def infer_family(base_model: str) -> str | None:
    """sd15 / sdxl / flux from a diffusers folder's model_index.json, a single file's tensor names, or a hub id."""
    path = user_path(base_model)
    if path.is_dir():
        index = path / "model_index.json"
        if index.exists():
            try:
                name = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
            except ValueError:
                return None
            return _PIPELINES.get(name)
        return None
    if path.is_file():
        if path.suffix == ".safetensors":
            return family_from_keys(safetensors_keys(path))
        return None
    lowered = base_model.lower()
    for family, pattern in _HUB_NAMES:
        if re.search(pattern, lowered):
            return family
    return None


# Hub ids by the names their families go by, most specific first ("FLUX.2" before "FLUX", "chroma" before both).
_HUB_NAMES = (
    ("flux2", r"flux\.?2"),
    ("chroma", r"chroma"),
    ("flux", r"flux"),
    ("sd3", r"stable-diffusion-3|sd3|sd-3"),
    ("lumina2", r"lumina-image-2|lumina2|lumina-2"),
    ("qwen_image", r"qwen-image|qwen_image"),
    ("sdxl", r"xl|sdxl|pony|illustrious"),
    ("sd15", r"v1-5|v1\.5|sd15|sd-1|stable-diffusion-v1"),
)
