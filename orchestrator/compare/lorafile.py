"""What a LoRA file is, read from its safetensors header only: size, key count, dtypes, rank, key layout."""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_MAX_HEADER = 100_000_000


@dataclass(frozen=True)
class LoraSummary:
    path: str
    size_bytes: int
    keys: int  # tensors in the file
    modules: int  # adapted layers (one down/A tensor each)
    dtypes: dict[str, int]  # dtype -> tensor count
    rank: int | None  # the largest down/A rank (LyCORIS files may have none)
    layout: str  # "kohya" (lora_unet_*), "diffusers" (unet.*.lora_A), or "other"
    metadata: dict[str, str]

    @property
    def dtype(self) -> str:
        return ", ".join(sorted(self.dtypes)) or "?"

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"dtype": self.dtype}


def read_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        (size,) = struct.unpack("<Q", raw)
        if size > _MAX_HEADER:
            raise ValueError(f"{path}: header of {size} bytes is not a safetensors header")
        header = json.loads(f.read(size))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a mapping")
    return header


def summarize_lora(path: Path) -> LoraSummary:
    header = read_header(path)
    metadata = {str(k): str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
    dtypes = Counter(str(info.get("dtype", "?")) for info in header.values() if isinstance(info, dict))
    downs = {k: v for k, v in header.items() if k.endswith((".lora_down.weight", ".lora_A.weight"))}
    ranks = [int(info["shape"][0]) for info in downs.values() if isinstance(info, dict) and info.get("shape")]
    names = list(header)
    if any(k.startswith(("lora_unet_", "lora_te", "lora_transformer_")) for k in names):
        layout = "kohya"
    elif any(".lora_A." in k or ".lora.down." in k for k in names):
        layout = "diffusers"
    else:
        layout = "other"
    return LoraSummary(
        path=str(path),
        size_bytes=path.stat().st_size,
        keys=len(header),
        modules=len(downs),
        dtypes=dict(sorted(dtypes.items())),
        rank=max(ranks) if ranks else None,
        layout=layout,
        metadata=metadata,
    )
