"""Flux LoRAs between sd-scripts' layout (BFL module names, fused qkv and linear1) and diffusers' (one per projection).

A Kohya module applies ``up @ down * alpha / rank``; a PEFT module ``B @ A * alpha / r``. Most modules map one to one
and their tensors are copied byte for byte. A fused Kohya module (``img_attn_qkv``, ``txt_attn_qkv``, ``linear1``)
maps to several diffusers parts whose output rows it stacks, in one of two shapes:

- shared: every part has the same A (sd-scripts trains it that way): A = down, B_j = the part's rows of up, and
  alpha and rank stay those of the fused module, so alpha / rank is unchanged;
- block-diagonal: the parts have their own A (PEFT trains it that way): down = cat(A_j) of rank sum(r_j), and up puts
  each B_j on its own rows and columns, zeros elsewhere. The fused module has one alpha for rank sum(r_j), so its
  alpha is chosen to give every part the scale alpha_j / r_j it had.

Splitting a fused module recognises the block-diagonal shape again, so both round trips give equal tensors. What the
tensors alone cannot say (a part's exact alpha, a part the LoRA did not train, ranks of a block-diagonal up that is
all zero) travels in the ``loraforge_flux_fused`` metadata entry, a JSON object keyed by Kohya module.

Only when the parts of a block-diagonal fusion had different scales does a weight change: each B_j is multiplied by
its scale over the fused one (and divided back when split), so the applied delta is equal up to float rounding
(exact where the ratio is a power of two).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from orchestrator.errors import LoraforgeError
from orchestrator.lora import keys as K
from orchestrator.lora.safetensors_io import Tensor

RECORD = "loraforge_flux_fused"
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_FLOAT = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}
FLUX_MLP_RATIO = 4  # FLUX.1's MLP width over its hidden width; used only when no tensor in the file shows the width


@dataclass
class Lora:
    """One module's LoRA: down (Kohya) = A (PEFT), up = B, and alpha (its scale is alpha / rank)."""

    down: Tensor
    up: Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]


def _bits(t: Tensor) -> np.ndarray:
    """The tensor as unsigned integers of its element size: moving these moves the values bit for bit."""
    if t.dtype not in _ITEMSIZE or len(t.shape) != 2:
        raise LoraforgeError(f"unexpected {t.dtype} tensor of shape {t.shape} in a Flux LoRA", "pass a Flux LoRA")
    return np.frombuffer(t.data, dtype=f"<u{_ITEMSIZE[t.dtype]}").reshape(t.shape)


def _tensor(dtype: str, bits: np.ndarray) -> Tensor:
    return Tensor(dtype, list(bits.shape), np.ascontiguousarray(bits).tobytes())


def _all_zero(bits: np.ndarray) -> bool:
    """Every value is +0 or -0 (all bits but the sign clear), whatever the float format."""
    sign = np.array(1 << (bits.dtype.itemsize * 8 - 1), dtype=bits.dtype)
    return bool(np.all((bits & ~sign) == 0))


def _scaled(t: Tensor, factor: float) -> Tensor:
    """``t * factor`` in t's own dtype (round to nearest even), for the one conversion that must change weights."""
    if t.dtype == "BF16":
        wide = (_bits(t).astype("<u4") << 16).view("<f4") * np.float32(factor)
        raw = wide.astype("<f4").view("<u4")
        rounded = ((raw + 0x7FFF + ((raw >> 16) & 1)) >> 16).astype("<u2")
        return _tensor("BF16", rounded)
    if t.dtype not in _FLOAT:
        raise LoraforgeError(f"cannot rescale {t.dtype} weights", "convert the LoRA to float16 or float32 first")
    values = _bits(t).view(_FLOAT[t.dtype]).astype(np.float64) * factor
    return _tensor(t.dtype, values.astype(_FLOAT[t.dtype]).view(f"<u{_ITEMSIZE[t.dtype]}"))


def _split_sizes(kohya: str, parts: int, lora: Lora) -> list[int]:
    """Rows of each part of a fused up matrix: qkv is 3 x hidden; linear1 is 3 x hidden + the MLP width, and hidden
    is linear1's input width (down's columns)."""
    rows, hidden = lora.up.shape[0], lora.down.shape[1]
    sizes = [hidden] * 3 + ([rows - 3 * hidden] if parts == 4 else [])
    if sum(sizes) != rows or min(sizes) <= 0:
        raise LoraforgeError(
            f"{kohya}: up has {rows} rows, which do not split into {parts} parts of a {hidden}-wide Flux block",
            "is this LoRA for Flux? its qkv / linear1 shapes do not match",
        )
    return sizes


def _same_scale(a: float, b: float) -> bool:
    """Equal scales up to float noise; both directions use this test, so a rescale is undone exactly when it was done."""
    return abs(a - b) <= 1e-6 * abs(b)


def _part_columns(lora: Lora, sizes: list[int], ranks: list[int] | None) -> list[tuple[int, int]] | None:
    """Column ranges of up (= row ranges of down) per part if up is block-diagonal; None if the parts share down.
    ``ranks`` come from the record our own fusion wrote, else equal ranks are tried; the off-diagonal blocks must be
    zero and, without a record, every diagonal block non-zero (an all-zero up is read as shared, like a fresh LoRA)."""
    known = ranks is not None
    if ranks is None:
        if lora.rank % len(sizes):
            return None
        ranks = [lora.rank // len(sizes)] * len(sizes)
    if sum(ranks) != lora.rank or max(ranks) == lora.rank:  # one part holding every column: shared
        return None
    up = _bits(lora.up)
    columns, rows, start, row = [], [], 0, 0
    for size, rank in zip(sizes, ranks, strict=True):
        columns.append((start, start + rank))
        rows.append((row, row + size))
        start, row = start + rank, row + size
    for j, (r0, r1) in enumerate(rows):
        for k, (c0, c1) in enumerate(columns):
            block = up[r0:r1, c0:c1]
            if j != k and not _all_zero(block):
                return None
            if j == k and not known and _all_zero(block):
                return None
    return columns


def _fused_alpha(parts: list[tuple[float, int]]) -> float:
    """The alpha of a block-diagonal fusion of parts (alpha, rank): the largest part scale over the summed rank, so
    the parts that must be rescaled only shrink (no float16 overflow)."""
    return max(alpha / rank for alpha, rank in parts) * sum(rank for _, rank in parts)


def _to_diffusers(kohya: str, lora: Lora, record: dict | None) -> tuple[dict[str, Lora], dict | None]:
    """One Kohya module -> its diffusers parts, and the record the reverse fusion needs (or None)."""
    names = K.flux_kohya_to_diffusers(kohya)
    if kohya == K.FLUX_SWAPPED_HALVES:
        up = _bits(lora.up)
        half = up.shape[0] // 2
        return {
            names[0]: Lora(lora.down, _tensor(lora.up.dtype, np.concatenate([up[half:], up[:half]])), lora.alpha)
        }, None
    if len(names) == 1:
        return {names[0]: lora}, None
    sizes = _split_sizes(kohya, len(names), lora)
    up, down = _bits(lora.up), _bits(lora.down)
    starts = np.cumsum([0, *sizes])
    record = record if isinstance(record, dict) else {}
    valid = all(isinstance(record.get(k), list) and len(record[k]) == len(names) for k in ("ranks", "alphas"))
    valid = valid and all(isinstance(r, int) and r >= 0 for r in record["ranks"])
    ranks: list[int] | None = record["ranks"] if valid else None
    alphas: list[float | None] = record["alphas"] if valid else [None] * len(names)
    columns = _part_columns(lora, sizes, ranks)
    out: dict[str, Lora] = {}
    for j, name in enumerate(names):
        rows = up[starts[j] : starts[j + 1]]
        if ranks is not None and ranks[j] == 0 and _all_zero(rows):
            continue  # a part the original LoRA did not train (our fusion filled its rows with zeros)
        if columns is None:
            out[name] = Lora(lora.down, _tensor(lora.up.dtype, rows), lora.alpha)
            continue
        c0, c1 = columns[j]
        if c1 == c0:
            continue
        part_up = _tensor(lora.up.dtype, rows[:, c0:c1])
        part = Lora(_tensor(lora.down.dtype, down[c0:c1]), part_up, lora.alpha * (c1 - c0) / lora.rank)
        if alphas[j] is not None:  # restore the part's own alpha exactly, undoing any rescale our fusion applied
            fused_scale, own_scale = lora.alpha / lora.rank, alphas[j] / (c1 - c0)
            if not _same_scale(fused_scale, own_scale):
                part.up = _scaled(part.up, fused_scale / own_scale)
            part.alpha = alphas[j]
        out[name] = part
    if columns is None or _fused_alpha([(p.alpha, p.rank) for p in out.values()]) == lora.alpha:
        return out, None
    return out, {"alpha": lora.alpha}  # the fused alpha our fusion would not recompute exactly from the parts


def _to_kohya(
    kohya: str, parts: dict[int, Lora], count: int, mlp: int | None, record: dict | None
) -> tuple[Lora, dict | None]:
    """Diffusers parts (by place; missing ones untrained) -> one Kohya module, and the record the reverse split needs."""
    first = next(iter(parts.values()))
    if count == 1:
        if kohya == K.FLUX_SWAPPED_HALVES:
            up = _bits(first.up)
            half = up.shape[0] // 2
            return Lora(first.down, _tensor(first.up.dtype, np.concatenate([up[half:], up[:half]])), first.alpha), None
        return first, None
    hidden = first.down.shape[1]
    sizes = [hidden] * 3 + ([parts[3].up.shape[0] if 3 in parts else mlp or 0] if count == 4 else [])
    for j, part in parts.items():
        if part.down.shape[1] != hidden or part.up.shape[0] != sizes[j]:
            raise LoraforgeError(f"{kohya}: its diffusers parts have inconsistent shapes", "is this a Flux LoRA?")
    if count == 4 and sizes[3] <= 0:
        raise LoraforgeError(f"{kohya}: cannot tell the MLP width of this Flux model", "is this a Flux LoRA?")
    dtypes = {p.up.dtype for p in parts.values()} | {p.down.dtype for p in parts.values()}
    if len(dtypes) > 1:
        raise LoraforgeError(f"{kohya}: its parts mix dtypes {sorted(dtypes)}", "save the LoRA in one dtype")
    dtype = first.up.dtype
    width = _ITEMSIZE[dtype] * 8
    shared = len({(p.down.shape[0], p.down.data) for p in parts.values()}) == 1
    shared = shared and len({p.alpha for p in parts.values()}) == 1
    partial = len(parts) < count
    alphas = [parts[j].alpha if j in parts else None for j in range(count)]
    if shared:
        rank = first.rank
        up = np.zeros((sum(sizes), rank), dtype=f"<u{width // 8}")
        start = 0
        for j, size in enumerate(sizes):
            if j in parts:
                up[start : start + size] = _bits(parts[j].up)
            start += size
        ranks = [rank if j in parts else 0 for j in range(count)]
        back = {"ranks": ranks, "alphas": alphas} if partial else None
        return Lora(first.down, _tensor(dtype, up), first.alpha), back
    ranks = [parts[j].rank if j in parts else 0 for j in range(count)]
    total = sum(ranks)
    scales = [parts[j].alpha / parts[j].rank for j in parts]
    recorded = (record or {}).get("alpha") if isinstance(record, dict) else None
    if isinstance(recorded, (int, float)) and all(_same_scale(recorded / total, s) for s in scales):
        alpha = float(recorded)  # the fused alpha the Kohya file had, exactly
    else:
        alpha = _fused_alpha([(p.alpha, p.rank) for p in parts.values()])
    fused_scale = alpha / total
    up = np.zeros((sum(sizes), total), dtype=f"<u{width // 8}")
    down = []
    row, col = 0, 0
    for j, size in enumerate(sizes):
        if j in parts:
            part = parts[j]
            own = part.alpha / part.rank
            part_up = part.up if _same_scale(fused_scale, own) else _scaled(part.up, own / fused_scale)
            up[row : row + size, col : col + part.rank] = _bits(part_up)
            down.append(_bits(part.down))
            col += part.rank
        row += size
    fused = Lora(_tensor(dtype, np.concatenate(down)), _tensor(dtype, up), alpha)
    return fused, {"ranks": ranks, "alphas": alphas}


def _records(metadata: dict[str, str]) -> dict[str, dict]:
    try:
        value = json.loads(metadata.get(RECORD, "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def kohya_to_diffusers(modules: dict[str, Lora], metadata: dict[str, str]) -> tuple[dict[str, Lora], dict[str, str]]:
    """Kohya Flux modules -> diffusers modules, and the metadata with the record for the way back."""
    records = _records(metadata)
    out: dict[str, Lora] = {}
    back: dict[str, dict] = {}
    for kohya, lora in modules.items():
        try:
            parts, record = _to_diffusers(kohya, lora, records.get(kohya))
        except ValueError as exc:
            raise LoraforgeError(str(exc), "is this a LoRA from sd-scripts' Flux trainer?") from None
        out.update(parts)
        if record:
            back[kohya] = record
    meta = {k: v for k, v in metadata.items() if k != RECORD}
    if back:
        meta[RECORD] = json.dumps(back, sort_keys=True)
    return out, meta


def _mlp_width(modules: dict[str, Lora]) -> int | None:
    """FLUX's MLP width from any tensor that shows it: a single block's proj_mlp rows or proj_out's input beyond the
    hidden width, a double block's ff input rows; else the hidden width times FLUX.1's MLP ratio."""
    hidden = None
    for name, lora in modules.items():
        if name.endswith(".proj_mlp"):
            return lora.up.shape[0]
        if name.endswith((".ff.net.0.proj", ".ff_context.net.0.proj")):
            return lora.up.shape[0]
        if name.endswith((".ff.net.2", ".ff_context.net.2")):
            return lora.down.shape[1]
        if name.startswith("transformer.single_transformer_blocks.") and ".attn.to_" in name:
            hidden = lora.down.shape[1]
    for name, lora in modules.items():
        if hidden and name.startswith("transformer.single_transformer_blocks.") and name.endswith(".proj_out"):
            return lora.down.shape[1] - hidden
    return hidden * FLUX_MLP_RATIO if hidden else None


def diffusers_to_kohya(modules: dict[str, Lora], metadata: dict[str, str]) -> tuple[dict[str, Lora], dict[str, str]]:
    """Diffusers Flux modules -> Kohya modules (fused where sd-scripts fuses), and the metadata with the record for
    the way back."""
    records = _records(metadata)
    grouped: dict[str, tuple[int, dict[int, Lora]]] = {}
    for name, lora in modules.items():
        try:
            kohya, place, count = K.flux_diffusers_to_kohya(name)
        except ValueError as exc:
            raise LoraforgeError(str(exc), "keep the file in the diffusers layout (--to diffusers)") from None
        grouped.setdefault(kohya, (count, {}))[1][place] = lora
    mlp = _mlp_width(modules)
    out: dict[str, Lora] = {}
    back: dict[str, dict] = {}
    for kohya, (count, parts) in grouped.items():
        out[kohya], record = _to_kohya(kohya, parts, count, mlp, records.get(kohya))
        if record:
            back[kohya] = record
    meta = {k: v for k, v in metadata.items() if k != RECORD}
    if back:
        meta[RECORD] = json.dumps(back, sort_keys=True)
    return out, meta
