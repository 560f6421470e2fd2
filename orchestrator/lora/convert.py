"""Convert LoRA files between the Kohya and diffusers/PEFT layouts without changing a single weight.

Kohya keeps alpha per module as a scalar tensor; PEFT keeps it in the file's ``lora_adapter_metadata`` (lora_alpha
and r per component, alpha_pattern / rank_pattern for modules that differ), which diffusers' load_lora_weights
reads. Weights are copied byte for byte in both directions, so a round trip is exact.

SD 1.5 and SDXL map name for name (keys.py). Flux and Chroma (flux.py), SD3 (sd3.py) and Lumina 2 (lumina2.py) also
split sd-scripts' fused modules (qkv, Flux's linear1) into diffusers' projections and fuse them back (fused.py); the
values still move bit for bit, except in one case fused.py describes (parts of one fused module trained with
different alpha / rank scales), where the applied delta stays equal to float rounding. Qwen-Image and FLUX.2 have
no sd-scripts trainer, hence no Kohya layout loraforge writes: asked for one, convert says so.
"""

from __future__ import annotations

import json
import struct
from collections import Counter, defaultdict
from pathlib import Path

from orchestrator.errors import LoraforgeError
from orchestrator.lora import flux, fused, lumina2, sd3
from orchestrator.lora import keys as K
from orchestrator.lora.check import check_lora
from orchestrator.lora.family import FAMILIES, lora_family
from orchestrator.lora.fused import Lora
from orchestrator.lora.safetensors_io import Tensor, read, write

_PACK = {"F32": "<f", "F16": "<e", "F64": "<d"}
# the families whose sd-scripts layout splits and fuses modules, and how
LAYOUTS: dict[str, fused.Layout] = {
    "flux": flux.LAYOUT,
    "chroma": flux.LAYOUT,
    "sd3": sd3.LAYOUT,
    "lumina2": lumina2.LAYOUT,
}
NO_KOHYA_LAYOUT = {"qwen_image": "Qwen-Image", "flux2": "FLUX.2"}  # no sd-scripts trainer


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


def family_of(tensors: dict[str, Tensor], metadata: dict[str, str], family: str | None = None) -> str | None:
    """The family given, else the one the file's metadata, module names or widths say (family.py)."""
    if family is not None:
        if family not in FAMILIES:
            raise LoraforgeError(f"unknown family {family!r}", f"use one of {', '.join(FAMILIES)}")
        return family
    return lora_family({k: t.shape for k, t in tensors.items()}, metadata).family


def _modules(tensors: dict[str, Tensor], down: str, up: str) -> dict[str, dict[str, Tensor]]:
    """Tensors grouped by module: {module: {part: tensor}}; a module needs both its down and its up weight."""
    grouped: dict[str, dict[str, Tensor]] = defaultdict(dict)
    for key, tensor in tensors.items():
        module, part = _module_and_part(key)
        grouped[module][part] = tensor
    for module, parts in grouped.items():
        if down not in parts or up not in parts:
            raise LoraforgeError(f"{module} has {' and '.join(sorted(parts))} but not both {down} and {up}",
                                 "the file is incomplete or not a plain LoRA")  # fmt: skip
    return grouped


def kohya_to_diffusers(
    tensors: dict[str, Tensor], metadata: dict[str, str], family: str | None = None
) -> tuple[dict[str, Tensor], dict[str, str]]:
    loras: dict[str, Lora] = {}
    alpha_dtypes: set[str] = set()
    for module, parts in _modules(tensors, ".lora_down.weight", ".lora_up.weight").items():
        down, up = parts[".lora_down.weight"], parts[".lora_up.weight"]
        alpha = float(down.shape[0])  # sd-scripts' meaning of a missing alpha: alpha = rank, scale 1
        if ".alpha" in parts:
            alpha = scalar(parts[".alpha"])
            alpha_dtypes.add(parts[".alpha"].dtype)
        loras[module] = Lora(down, up, alpha)
    family = family_of(tensors, metadata, family)
    if family in LAYOUTS:
        mapped, metadata = fused.to_diffusers(LAYOUTS[family], loras, metadata)
    elif family in NO_KOHYA_LAYOUT:
        name = NO_KOHYA_LAYOUT[family]
        raise LoraforgeError(
            f"this {name} LoRA has Kohya-style names (musubi-tuner's), which loraforge does not convert: it converts "
            f"the layouts of sd-scripts' trainers, and sd-scripts does not train {name}",
            "use the file as it is: diffusers' load_lora_weights reads these names itself",
        )
    else:
        try:
            mapped = {K.kohya_module_to_diffusers(m): lora for m, lora in loras.items()}
        except ValueError as exc:
            raise LoraforgeError(
                str(exc), "is this a Kohya LoRA for SD 1.5, SDXL, SD3, Flux, Chroma or Lumina 2?"
            ) from None
    out: dict[str, Tensor] = {}
    for target, lora in mapped.items():
        out[f"{target}.lora_A.weight"] = lora.down
        out[f"{target}.lora_B.weight"] = lora.up
    meta = dict(metadata)
    meta["lora_adapter_metadata"] = json.dumps(_peft_metadata(mapped), indent=1, sort_keys=True)
    if alpha_dtypes:
        meta["loraforge_alpha_dtype"] = sorted(alpha_dtypes)[0]
    meta["loraforge_format"] = "diffusers"
    return out, meta


def _peft_metadata(loras: dict[str, Lora]) -> dict[str, object]:
    """PEFT's LoraConfig per component (unet, transformer, text_encoder...): the most common rank and alpha, and
    rank_pattern / alpha_pattern for the modules that differ, which is how diffusers reads per-module alpha."""
    peft: dict[str, object] = {}
    by_root: dict[str, list[str]] = defaultdict(list)
    for module in loras:
        by_root[module.partition(".")[0]].append(module)
    for root, modules in by_root.items():
        r = Counter(loras[m].rank for m in modules).most_common(1)[0][0]
        alpha = Counter(loras[m].alpha for m in modules).most_common(1)[0][0]
        strip = len(root) + 1
        peft[f"{root}.r"] = r
        peft[f"{root}.lora_alpha"] = alpha
        peft[f"{root}.rank_pattern"] = {m[strip:]: loras[m].rank for m in modules if loras[m].rank != r}
        peft[f"{root}.alpha_pattern"] = {m[strip:]: loras[m].alpha for m in modules if loras[m].alpha != alpha}
        peft[f"{root}.target_modules"] = sorted({m.rsplit(".", 1)[-1] for m in modules})
        peft[f"{root}.peft_type"] = "LORA"
    return peft


def diffusers_to_kohya(
    tensors: dict[str, Tensor], metadata: dict[str, str], family: str | None = None
) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        peft = json.loads(metadata.get("lora_adapter_metadata", "{}"))
    except ValueError:
        peft = {}
    peft = peft if isinstance(peft, dict) else {}
    alpha_dtype = metadata.get("loraforge_alpha_dtype", "F32")
    loras: dict[str, Lora] = {}
    for module, parts in _modules(tensors, ".lora_A.weight", ".lora_B.weight").items():
        if set(parts) != {".lora_A.weight", ".lora_B.weight"}:
            raise LoraforgeError(f"unexpected keys for {module} in a diffusers LoRA: {sorted(parts)}")
        down = parts[".lora_A.weight"]
        root, _, sub = module.partition(".")
        alpha = peft.get(f"{root}.alpha_pattern", {}).get(sub, peft.get(f"{root}.lora_alpha"))
        loras[module] = Lora(down, parts[".lora_B.weight"], float(alpha if alpha is not None else down.shape[0]))
    family = family_of(tensors, metadata, family)
    if family in LAYOUTS:
        mapped, metadata = fused.to_kohya(LAYOUTS[family], loras, metadata)
    elif family in NO_KOHYA_LAYOUT:
        name = NO_KOHYA_LAYOUT[family]
        raise LoraforgeError(
            f"{name} LoRAs have no Kohya layout loraforge writes: sd-scripts, the trainer that layout comes from, "
            f"does not train {name}",
            "keep the diffusers layout: diffusers' load_lora_weights loads it as it is",
        )
    elif any(m.startswith("transformer.") for m in loras):
        raise LoraforgeError(
            "cannot tell which model this transformer LoRA is for: its module names and widths fit several families",
            f"name it: --family {'|'.join(LAYOUTS)}",
        )
    else:
        sdxl = family == "sdxl"
        try:
            mapped = {K.diffusers_module_to_kohya(m, sdxl): lora for m, lora in loras.items()}
        except ValueError as exc:
            raise LoraforgeError(str(exc), "keep the file in the diffusers layout (--to diffusers)") from None
    out: dict[str, Tensor] = {}
    for target, lora in mapped.items():
        out[f"{target}.lora_down.weight"] = lora.down
        out[f"{target}.lora_up.weight"] = lora.up
        out[f"{target}.alpha"] = make_scalar(lora.alpha, alpha_dtype)
    meta = {k: v for k, v in metadata.items() if k not in ("lora_adapter_metadata", "loraforge_alpha_dtype")}
    meta["loraforge_format"] = "kohya"
    return out, meta


def convert(source: Path, target: Path, to: str, family: str | None = None) -> Path:
    """Read ``source`` (every check first: a broken LoRA is refused before anything is written), convert, and write
    ``target`` atomically. ``family`` overrides the one the file says or looks like."""
    tensors, metadata = read(source)
    check_lora(source, tensors, metadata)
    kind = K.layout(list(tensors))
    if kind == "unknown":
        raise LoraforgeError(
            f"{source} has no LoRA weights (no lora_down/lora_up or lora_A/lora_B keys)",
            "pass a LoRA file, not a base model or an embedding",
        )
    if kind == to:
        out, meta = tensors, dict(metadata)
    elif to == "diffusers":
        out, meta = kohya_to_diffusers(tensors, metadata, family)
    elif to == "kohya":
        out, meta = diffusers_to_kohya(tensors, metadata, family)
    else:
        raise LoraforgeError(f"unknown format {to!r}", "use kohya or diffusers")
    return write(target, out, meta)
