"""What a LoRA file is: layout, family, rank, alpha, modules, size, dtype, trigger and metadata (every tensor checked)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from orchestrator.errors import LoraforgeError
from orchestrator.lora import keys as K
from orchestrator.lora.check import check_lora
from orchestrator.lora.convert import LAYOUTS, NO_KOHYA_LAYOUT, scalar
from orchestrator.lora.family import lora_family
from orchestrator.lora.safetensors_io import read


def describe(path: Path) -> dict[str, Any]:
    tensors, metadata = read(path)
    check_lora(path, tensors, metadata)
    header = {name: {"shape": t.shape, "dtype": t.dtype} for name, t in tensors.items()}
    names = list(header)
    layout = K.layout(names)
    if layout == "unknown":
        raise LoraforgeError(
            f"{path} is a .safetensors file but not a LoRA (no lora_down/lora_up or lora_A/lora_B keys)",
            "pass a LoRA file, not a base model or an embedding",
        )
    down = ".lora_down.weight" if layout == "kohya" else ".lora_A.weight"
    ranks = Counter(header[k]["shape"][0] for k in names if k.endswith(down))
    modules = sum(1 for k in names if k.endswith(down))
    alphas: Counter[float] = Counter()
    if layout == "kohya":
        alphas.update(scalar(t) for k, t in tensors.items() if k.endswith(".alpha"))
    else:
        try:
            peft = json.loads(metadata.get("lora_adapter_metadata", "{}"))
            alphas.update(float(v) for k, v in peft.items() if k.endswith(".lora_alpha"))
        except ValueError:
            pass
    reading = lora_family({name: t.shape for name, t in tensors.items()}, metadata)
    return {
        "file": str(path),
        "layout": layout,
        "family": reading.family or "unknown",
        "family_from": reading.describe(),
        "converts_to": _converts_to(layout, reading.family),
        "rank": ranks.most_common(1)[0][0] if ranks else None,
        "alpha": alphas.most_common(1)[0][0] if alphas else None,
        "modules": modules,
        "text_encoder": any(k.startswith(("lora_te", "text_encoder")) for k in names),
        "size_bytes": path.stat().st_size,
        "dtypes": dict(Counter(header[k]["dtype"] for k in names)),
        "trigger": metadata.get("loraforge_trigger") or metadata.get("modelspec.trigger_phrase") or None,
        "metadata": metadata,
    }


def _converts_to(layout: str, family: str | None) -> str | None:
    """The other layout `loraforge convert` writes for this file, or None where there is none."""
    other = "diffusers" if layout == "kohya" else "kohya"
    if family in NO_KOHYA_LAYOUT:
        return None
    if family in LAYOUTS or family in ("sd15", "sdxl"):
        return other
    return None
