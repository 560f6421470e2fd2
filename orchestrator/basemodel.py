"""What a base model is: its family (sd15, sdxl, flux), read from its files where it is local."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

_PIPELINES = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
    "FluxPipeline": "flux",
}


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names in a .safetensors file, read from its header only (no tensor data loaded)."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 100_000_000:
            raise ValueError(f"{path}: header of {size} bytes is not a safetensors header")
        header = json.loads(f.read(size))
    return [k for k in header if k != "__metadata__"]


def family_from_keys(keys: list[str]) -> str | None:
    joined = "\n".join(keys[:5000])
    if "double_blocks." in joined or "transformer_blocks." in joined and "single_transformer_blocks." in joined:
        return "flux"
    if "conditioner.embedders.1" in joined or "add_embedding" in joined or "label_emb." in joined:
        return "sdxl"
    if "model.diffusion_model.input_blocks" in joined or "cond_stage_model.transformer" in joined:
        return "sd15"
    return None


def infer_family(base_model: str) -> str | None:
    """sd15 / sdxl / flux from a diffusers folder's model_index.json, a single file's tensor names, or a hub id."""
    path = Path(base_model).expanduser()
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
            try:
                return family_from_keys(safetensors_keys(path))
            except (OSError, ValueError):
                return None
        return None
    lowered = base_model.lower()
    if "flux" in lowered:
        return "flux"
    if re.search(r"xl|sdxl|pony|illustrious", lowered):
        return "sdxl"
    if re.search(r"v1-5|v1\.5|sd15|sd-1|stable-diffusion-v1", lowered):
        return "sd15"
    return None
