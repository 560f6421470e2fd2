"""Pick the device and dtype: CUDA, then Apple MPS, then CPU; half precision only on a GPU."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import LoraforgeError


def pick_device(requested: str = "auto") -> str:
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if requested == "cuda" and not cuda:
        raise LoraforgeError("--device cuda was asked for but torch sees no CUDA GPU", "use --device auto or cpu")
    if requested == "mps" and not mps:
        raise LoraforgeError("--device mps was asked for but this torch has no Apple MPS", "use --device auto or cpu")
    return requested


def pick_dtype(device: str) -> Any:
    """bf16 where the GPU supports it (no overflow), else fp16 on a GPU; fp32 on CPU (half is slow or absent there)."""
    import torch

    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32
