"""Is a well-formed .safetensors file a LoRA that can be read, converted and applied? Checked before anything is
written from it, each problem naming the tensor.

A module is a pair of matrices: down (Kohya ``lora_down``, PEFT ``lora_A``) of shape [rank, in] (a conv LoRA:
[rank, in, kh, kw]) and up (``lora_up`` / ``lora_B``) of shape [out, rank] ([out, rank, 1, 1]); both floating point,
their ranks equal, the rank at least 1. Kohya keeps each module's alpha as a scalar tensor; PEFT keeps alpha and
rank in the ``lora_adapter_metadata`` JSON. Keys of other kinds are left to the commands that use them.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from orchestrator.errors import LoraforgeError
from orchestrator.lora.safetensors_io import FIX, Tensor

FLOATS = {"F16": "<e", "BF16": None, "F32": "<f", "F64": "<d"}
DOWN = (".lora_down.weight", ".lora_A.weight")
UP = (".lora_up.weight", ".lora_B.weight")


def bad_lora(path: Path, problem: str, tensor: str | None = None) -> LoraforgeError:
    where = f"tensor {tensor!r}: " if tensor is not None else ""
    return LoraforgeError(f"{path} is a broken LoRA: {where}{problem}", FIX)


def check_lora(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Raise (naming the tensor) unless every module's down/up shapes, ranks and dtypes and every alpha are sound."""
    downs: dict[str, tuple[str, Tensor]] = {}
    ups: dict[str, tuple[str, Tensor]] = {}
    for name, tensor in tensors.items():
        if name.endswith(DOWN) or name.endswith(UP):
            module, _, _ = name.rpartition(".lora_")
            if tensor.dtype not in FLOATS:
                raise bad_lora(path, f"dtype {tensor.dtype}: LoRA weights are floating point (F16, BF16, F32)", name)
            if len(tensor.shape) not in (2, 4):
                raise bad_lora(path, f"shape {tensor.shape}: a LoRA weight is a matrix (or a 4-d conv kernel)", name)
            (downs if name.endswith(DOWN) else ups)[module] = (name, tensor)
        elif name.endswith(".alpha"):
            check_alpha(path, name, tensor)
    for module, (name, down) in downs.items():
        rank = down.shape[0]
        if rank < 1:
            raise bad_lora(path, f"shape {down.shape}: rank 0", name)
        if module not in ups:
            raise bad_lora(path, "a down weight without its up weight (the file is incomplete)", name)
        up_name, up = ups[module]
        if up.shape[1] != rank:
            raise bad_lora(path, f"shape {up.shape} has rank {up.shape[1]}, but {name} has rank {rank}", up_name)
    for module, (name, _) in ups.items():
        if module not in downs:
            raise bad_lora(path, "an up weight without its down weight (the file is incomplete)", name)
    _check_peft_metadata(path, metadata)


def check_alpha(path: Path, name: str, tensor: Tensor) -> float:
    """A Kohya alpha: one finite floating-point number (shape [] or [1])."""
    if tensor.dtype not in FLOATS:
        raise bad_lora(path, f"alpha of dtype {tensor.dtype}: an alpha is a floating-point scalar", name)
    if math.prod(tensor.shape) != 1:
        raise bad_lora(path, f"alpha of shape {tensor.shape}: an alpha is one number", name)
    fmt = FLOATS[tensor.dtype]
    value = struct.unpack("<f", b"\x00\x00" + tensor.data[:2])[0] if fmt is None else struct.unpack(fmt, tensor.data)[0]
    if not math.isfinite(value):
        raise bad_lora(path, f"alpha is {value}", name)
    return value


def _check_peft_metadata(path: Path, metadata: dict[str, str]) -> None:
    """PEFT's per-component settings, as convert and inspect read them: numbers where numbers belong."""
    text = metadata.get("lora_adapter_metadata")
    if text is None:
        return
    try:
        peft = json.loads(text)
    except (ValueError, RecursionError):
        raise bad_lora(path, "its lora_adapter_metadata is not JSON") from None
    if not isinstance(peft, dict):
        raise bad_lora(path, "its lora_adapter_metadata is not a JSON object")
    for key, value in peft.items():
        if key.endswith((".lora_alpha", ".r")):
            _number(path, key, value)
        elif key.endswith((".alpha_pattern", ".rank_pattern")):
            if not isinstance(value, dict):
                raise bad_lora(path, f"lora_adapter_metadata {key} is not a mapping of module to number")
            for module, number in value.items():
                _number(path, f"{key}.{module}", number)


def _number(path: Path, key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise bad_lora(path, f"lora_adapter_metadata {key[:120]} is {json.dumps(value)[:40]}, not a positive number")
