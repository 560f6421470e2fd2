"""Convert LoRA files between the Kohya and diffusers/PEFT layouts without changing a single weight.

Kohya keeps alpha per module as a scalar tensor; PEFT keeps it in the file's ``lora_adapter_metadata`` (lora_alpha
and r per component, alpha_pattern / rank_pattern for modules that differ), which diffusers' load_lora_weights
reads. Weights are copied byte for byte in both directions, so a round trip is exact.
"""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from pathlib import Path

from orchestrator.errors import LoraforgeError
from orchestrator.lora import keys as K
from orchestrator.lora.safetensors_io import Tensor, read, write

_PACK = {"F32": "<f", "F16": "<e", "F64": "<d"}


def scalar(t: Tensor) -> float:
    if t.dtype == "BF16":
        return struct.unpack("<f", b"\x00\x00" + t.data[:2])[0]
    if t.dtype in _PACK:
        return struct.unpack(_PACK[t.dtype], t.data[: struct.calcsize(_PACK[t.dtype])])[0]
    raise LoraforgeError(f"unexpected alpha dtype {t.dtype}")


def make_scalar(value: float, dtype: str = "F32") -> Tensor:
    if dtype == "BF16":
        return Tensor("BF16", [], struct.pack("<f", value)[2:])
    fmt = _PACK.get(dtype, "<f")
    return Tensor(dtype if dtype in _PACK else "F32", [], struct.pack(fmt, value))


def _module_and_part(key: str) -> tuple[str, str]:
    for part in (".lora_down.weight", ".lora_up.weight", ".alpha", ".lora_A.weight", ".lora_B.weight"):
        if key.endswith(part):
            return key[: -len(part)], part
    raise LoraforgeError(f"unexpected LoRA key {key}", "is this a LoRA (not a LyCORIS LoHa/LoKr or a full model)?")


def is_sdxl(keys: list[str], metadata: dict[str, str]) -> bool:
    return (
        any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.", "lora_unet_input_blocks")) for k in keys)
        or "sdxl" in metadata.get("modelspec.architecture", "")
        or metadata.get("ss_base_model_version", "").startswith("sdxl")
    )


def kohya_to_diffusers(
    tensors: dict[str, Tensor], metadata: dict[str, str]
) -> tuple[dict[str, Tensor], dict[str, str]]:
    out: dict[str, Tensor] = {}
    alphas: dict[str, float] = {}
    alpha_dtypes: set[str] = set()
    ranks: dict[str, int] = {}
    for key, tensor in tensors.items():
        module, part = _module_and_part(key)
        target = K.kohya_module_to_diffusers(module)
        if part == ".alpha":
            alphas[target] = scalar(tensor)
            alpha_dtypes.add(tensor.dtype)
        elif part == ".lora_down.weight":
            out[f"{target}.lora_A.weight"] = tensor
            ranks[target] = tensor.shape[0]
        else:
            out[f"{target}.lora_B.weight"] = tensor
    peft: dict[str, object] = {}
    by_root: dict[str, list[str]] = defaultdict(list)
    for module in ranks:
        by_root[module.partition(".")[0]].append(module)
    for root, modules in by_root.items():
        rank_counts: dict[int, int] = defaultdict(int)
        for m in modules:
            rank_counts[ranks[m]] += 1
        r = max(rank_counts, key=lambda v: rank_counts[v])
        module_alpha = {m: alphas.get(m, float(ranks[m])) for m in modules}
        alpha_counts: dict[float, int] = defaultdict(int)
        for value in module_alpha.values():
            alpha_counts[value] += 1
        alpha = max(alpha_counts, key=lambda v: alpha_counts[v])
        strip = len(root) + 1
        peft[f"{root}.r"] = r
        peft[f"{root}.lora_alpha"] = alpha
        peft[f"{root}.rank_pattern"] = {m[strip:]: ranks[m] for m in modules if ranks[m] != r}
        peft[f"{root}.alpha_pattern"] = {m[strip:]: module_alpha[m] for m in modules if module_alpha[m] != alpha}
        peft[f"{root}.target_modules"] = sorted({m.rsplit(".", 1)[-1] for m in modules})
        peft[f"{root}.peft_type"] = "LORA"
    meta = dict(metadata)
    meta["lora_adapter_metadata"] = json.dumps(peft, indent=1, sort_keys=True)
    if alpha_dtypes:
        meta["loraforge_alpha_dtype"] = sorted(alpha_dtypes)[0]
    meta["loraforge_format"] = "diffusers"
    return out, meta


def diffusers_to_kohya(
    tensors: dict[str, Tensor], metadata: dict[str, str]
) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        peft = json.loads(metadata.get("lora_adapter_metadata", "{}"))
    except ValueError:
        peft = {}
    sdxl = is_sdxl(list(tensors), metadata)
    alpha_dtype = metadata.get("loraforge_alpha_dtype", "F32")
    out: dict[str, Tensor] = {}
    for key, tensor in tensors.items():
        module, part = _module_and_part(key)
        if part not in (".lora_A.weight", ".lora_B.weight"):
            raise LoraforgeError(f"unexpected key {key} in a diffusers LoRA")
        try:
            target = K.diffusers_module_to_kohya(module, sdxl)
        except ValueError as exc:
            raise LoraforgeError(str(exc), "keep the file in the diffusers layout (--to diffusers)") from None
        if part == ".lora_A.weight":
            out[f"{target}.lora_down.weight"] = tensor
            root, _, sub = module.partition(".")
            alpha = peft.get(f"{root}.alpha_pattern", {}).get(sub, peft.get(f"{root}.lora_alpha"))
            out[f"{target}.alpha"] = make_scalar(float(alpha if alpha is not None else tensor.shape[0]), alpha_dtype)
        else:
            out[f"{target}.lora_up.weight"] = tensor
    meta = {k: v for k, v in metadata.items() if k not in ("lora_adapter_metadata", "loraforge_alpha_dtype")}
    meta["loraforge_format"] = "kohya"
    return out, meta


def convert(source: Path, target: Path, to: str) -> Path:
    tensors, metadata = read(source)
    kind = K.layout(list(tensors))
    if kind == "unknown":
        raise LoraforgeError(
            f"{source} has no LoRA weights (no lora_down/lora_up or lora_A/lora_B keys)",
            "pass a LoRA file, not a base model or an embedding",
        )
    if kind == to:
        out, meta = tensors, dict(metadata)
    elif to == "diffusers":
        out, meta = kohya_to_diffusers(tensors, metadata)
    elif to == "kohya":
        out, meta = diffusers_to_kohya(tensors, metadata)
    else:
        raise LoraforgeError(f"unknown format {to!r}", "use kohya or diffusers")
    return write(target, out, meta)
