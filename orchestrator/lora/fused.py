"""Kohya modules that fuse several diffusers modules, split and fused back without changing a weight.

sd-scripts trains the original checkpoints' modules: for Flux, SD3 and Lumina 2 a fused qkv Linear (and Flux's
single-block linear1, q, k, v and the MLP input) where diffusers has one Linear per projection. A :class:`Layout`
names, per family, which diffusers modules each Kohya module holds and how its output rows divide; the functions
here do the rest for every family.

A Kohya module applies ``up @ down * alpha / rank``; a PEFT module ``B @ A * alpha / r``. Most modules map one to one
and their tensors are copied byte for byte. A fused Kohya module maps to several diffusers parts whose output rows it
stacks, in one of two shapes:

- shared: every part has the same A (sd-scripts trains it that way): A = down, B_j = the part's rows of up, and
  alpha and rank stay those of the fused module, so alpha / rank is unchanged;
- block-diagonal: the parts have their own A (PEFT trains it that way): down = cat(A_j) of rank sum(r_j), and up puts
  each B_j on its own rows and columns, zeros elsewhere. The fused module has one alpha for rank sum(r_j), so its
  alpha is chosen to give every part the scale alpha_j / r_j it had.

Splitting a fused module recognises the block-diagonal shape again, so both round trips give equal tensors. What the
tensors alone cannot say (a part's exact alpha, a part the LoRA did not train, ranks of a block-diagonal up that is
all zero) travels in a metadata entry (the layout's ``record``), a JSON object keyed by Kohya module.

Only when the parts of a block-diagonal fusion had different scales does a weight change: each B_j is multiplied by
its scale over the fused one (and divided back when split), so the applied delta is equal up to float rounding
(exact where the ratio is a power of two). A module whose output rows are two halves in the other order in diffusers
(a final modulation's shift, scale against diffusers' scale, shift) has its up rows swapped, which moves bits only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from orchestrator.errors import LoraforgeError
from orchestrator.lora.safetensors_io import Tensor

_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_FLOAT = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}


@dataclass
class Lora:
    """One module's LoRA: down (Kohya) = A (PEFT), up = B, and alpha (its scale is alpha / rank)."""

    down: Tensor
    up: Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]


@dataclass(frozen=True)
class Layout:
    """One family's Kohya module names against diffusers'. The callables raise ValueError for a name the layout
    does not have; sizes are rows of each part of a fused up matrix, in the order of ``parts``."""

    family: str  # its name in messages: "Flux", "SD3", "Lumina 2"
    record: str  # the metadata key of what a round trip needs beyond the tensors
    parts: Callable[[str], tuple[str, ...]]  # Kohya module -> its diffusers modules
    place: Callable[[str], tuple[str, int, int]]  # diffusers module -> (Kohya module, place in it, parts in it)
    swapped: Callable[[str, Lora], bool]  # up rows are two halves in the other order in diffusers
    split_sizes: Callable[[str, int, Lora], list[int]]  # a fused Kohya module's rows per part
    fuse_sizes: Callable[[str, dict[int, Lora], int, dict[str, Lora]], list[int]]  # rows per part (some untrained)


def bits(t: Tensor) -> np.ndarray:
    """The tensor as unsigned integers of its element size: moving these moves the values bit for bit."""
    if t.dtype not in _ITEMSIZE or len(t.shape) != 2:
        raise LoraforgeError(f"unexpected {t.dtype} tensor of shape {t.shape} in a LoRA module that is split or fused",
                             "pass a LoRA of plain Linear modules in float16, bfloat16 or float32")  # fmt: skip
    return np.frombuffer(t.data, dtype=f"<u{_ITEMSIZE[t.dtype]}").reshape(t.shape)


def tensor(dtype: str, raw: np.ndarray) -> Tensor:
    return Tensor(dtype, list(raw.shape), np.ascontiguousarray(raw).tobytes())


def all_zero(raw: np.ndarray) -> bool:
    """Every value is +0 or -0 (all bits but the sign clear), whatever the float format."""
    sign = np.array(1 << (raw.dtype.itemsize * 8 - 1), dtype=raw.dtype)
    return bool(np.all((raw & ~sign) == 0))


def swap_halves(lora: Lora) -> Lora:
    up = bits(lora.up)
    half = up.shape[0] // 2
    return Lora(lora.down, tensor(lora.up.dtype, np.concatenate([up[half:], up[:half]])), lora.alpha)


def scaled(t: Tensor, factor: float) -> Tensor:
    """``t * factor`` in t's own dtype (round to nearest even), for the one conversion that must change weights."""
    if t.dtype == "BF16":
        wide = (bits(t).astype("<u4") << 16).view("<f4") * np.float32(factor)
        raw = wide.astype("<f4").view("<u4")
        rounded = ((raw + 0x7FFF + ((raw >> 16) & 1)) >> 16).astype("<u2")
        return tensor("BF16", rounded)
    if t.dtype not in _FLOAT:
        raise LoraforgeError(f"cannot rescale {t.dtype} weights", "convert the LoRA to float16 or float32 first")
    values = bits(t).view(_FLOAT[t.dtype]).astype(np.float64) * factor
    return tensor(t.dtype, values.astype(_FLOAT[t.dtype]).view(f"<u{_ITEMSIZE[t.dtype]}"))


def same_scale(a: float, b: float) -> bool:
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
    up = bits(lora.up)
    columns, rows, start, row = [], [], 0, 0
    for size, rank in zip(sizes, ranks, strict=True):
        columns.append((start, start + rank))
        rows.append((row, row + size))
        start, row = start + rank, row + size
    for j, (r0, r1) in enumerate(rows):
        for k, (c0, c1) in enumerate(columns):
            block = up[r0:r1, c0:c1]
            if j != k and not all_zero(block):
                return None
            if j == k and not known and all_zero(block):
                return None
    return columns


def _fused_alpha(parts: list[tuple[float, int]]) -> float:
    """The alpha of a block-diagonal fusion of parts (alpha, rank): the largest part scale over the summed rank, so
    the parts that must be rescaled only shrink (no float16 overflow)."""
    return max(alpha / rank for alpha, rank in parts) * sum(rank for _, rank in parts)


def split(kohya: str, lora: Lora, names: tuple[str, ...], sizes: list[int], record: object) -> tuple[dict, dict | None]:
    """One fused Kohya module -> its diffusers parts ({name: Lora}), and the record the reverse fusion needs."""
    up, down = bits(lora.up), bits(lora.down)
    starts = np.cumsum([0, *sizes])
    saved = record if isinstance(record, dict) else {}
    valid = all(isinstance(saved.get(k), list) and len(saved[k]) == len(names) for k in ("ranks", "alphas"))
    valid = valid and all(isinstance(r, int) and r >= 0 for r in saved["ranks"])
    ranks: list[int] | None = saved["ranks"] if valid else None
    alphas: list[float | None] = saved["alphas"] if valid else [None] * len(names)
    columns = _part_columns(lora, sizes, ranks)
    out: dict[str, Lora] = {}
    for j, name in enumerate(names):
        rows = up[starts[j] : starts[j + 1]]
        if ranks is not None and ranks[j] == 0 and all_zero(rows):
            continue  # a part the original LoRA did not train (our fusion filled its rows with zeros)
        if columns is None:
            out[name] = Lora(lora.down, tensor(lora.up.dtype, rows), lora.alpha)
            continue
        c0, c1 = columns[j]
        if c1 == c0:
            continue
        part = Lora(tensor(lora.down.dtype, down[c0:c1]), tensor(lora.up.dtype, rows[:, c0:c1]), 0.0)
        part.alpha = lora.alpha * (c1 - c0) / lora.rank
        own_alpha = alphas[j]
        if own_alpha is not None:  # restore the part's own alpha exactly, undoing any rescale our fusion applied
            fused_scale, own_scale = lora.alpha / lora.rank, own_alpha / (c1 - c0)
            if not same_scale(fused_scale, own_scale):
                part.up = scaled(part.up, fused_scale / own_scale)
            part.alpha = own_alpha
        out[name] = part
    if columns is None or _fused_alpha([(p.alpha, p.rank) for p in out.values()]) == lora.alpha:
        return out, None
    return out, {"alpha": lora.alpha}  # the fused alpha our fusion would not recompute exactly from the parts


def fuse(kohya: str, parts: dict[int, Lora], sizes: list[int], record: object) -> tuple[Lora, dict | None]:
    """Diffusers parts (by place; missing ones untrained) -> one Kohya module, and the record the reverse split needs."""
    count = len(sizes)
    first = next(iter(parts.values()))
    hidden = first.down.shape[1]
    for j, part in parts.items():
        if part.down.shape[1] != hidden or part.up.shape[0] != sizes[j]:
            raise LoraforgeError(f"{kohya}: its diffusers parts have inconsistent shapes",
                                 "is the LoRA for the model family its names say?")  # fmt: skip
    if min(sizes) <= 0:
        raise LoraforgeError(f"{kohya}: cannot tell the rows of its untrained parts from this LoRA",
                             "keep the file in the diffusers layout")  # fmt: skip
    dtypes = {p.up.dtype for p in parts.values()} | {p.down.dtype for p in parts.values()}
    if len(dtypes) > 1:
        raise LoraforgeError(f"{kohya}: its parts mix dtypes {sorted(dtypes)}", "save the LoRA in one dtype")
    dtype = first.up.dtype
    width = _ITEMSIZE[dtype]
    shared = len({(p.down.shape[0], p.down.data) for p in parts.values()}) == 1
    shared = shared and len({p.alpha for p in parts.values()}) == 1
    alphas = [parts[j].alpha if j in parts else None for j in range(count)]
    if shared:
        rank = first.rank
        up = np.zeros((sum(sizes), rank), dtype=f"<u{width}")
        start = 0
        for j, size in enumerate(sizes):
            if j in parts:
                up[start : start + size] = bits(parts[j].up)
            start += size
        ranks = [rank if j in parts else 0 for j in range(count)]
        back = {"ranks": ranks, "alphas": alphas} if len(parts) < count else None
        return Lora(first.down, tensor(dtype, up), first.alpha), back
    ranks = [parts[j].rank if j in parts else 0 for j in range(count)]
    total = sum(ranks)
    scales = [parts[j].alpha / parts[j].rank for j in parts]
    recorded = record.get("alpha") if isinstance(record, dict) else None
    if isinstance(recorded, (int, float)) and all(same_scale(recorded / total, s) for s in scales):
        alpha = float(recorded)  # the fused alpha the Kohya file had, exactly
    else:
        alpha = _fused_alpha([(p.alpha, p.rank) for p in parts.values()])
    fused_scale = alpha / total
    up = np.zeros((sum(sizes), total), dtype=f"<u{width}")
    down = []
    row, col = 0, 0
    for j, size in enumerate(sizes):
        if j in parts:
            part = parts[j]
            own = part.alpha / part.rank
            part_up = part.up if same_scale(fused_scale, own) else scaled(part.up, own / fused_scale)
            up[row : row + size, col : col + part.rank] = bits(part_up)
            down.append(bits(part.down))
            col += part.rank
        row += size
    fused = Lora(tensor(dtype, np.concatenate(down)), tensor(dtype, up), alpha)
    return fused, {"ranks": ranks, "alphas": alphas}


def _records(metadata: dict[str, str], key: str) -> dict[str, dict]:
    try:
        value = json.loads(metadata.get(key, "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _with_records(metadata: dict[str, str], key: str, records: dict[str, dict]) -> dict[str, str]:
    meta = {k: v for k, v in metadata.items() if k != key}
    if records:
        meta[key] = json.dumps(records, sort_keys=True)
    return meta


def to_diffusers(
    layout: Layout, modules: dict[str, Lora], metadata: dict[str, str]
) -> tuple[dict[str, Lora], dict[str, str]]:
    """Kohya modules -> diffusers modules, and the metadata with the record for the way back."""
    records = _records(metadata, layout.record)
    out: dict[str, Lora] = {}
    back: dict[str, dict] = {}
    for kohya, lora in modules.items():
        try:
            names = layout.parts(kohya)
        except ValueError as exc:
            raise LoraforgeError(str(exc), f"is this a LoRA from sd-scripts' {layout.family} trainer?") from None
        if len(names) == 1:
            out[names[0]] = swap_halves(lora) if layout.swapped(kohya, lora) else lora
            continue
        parts, record = split(kohya, lora, names, layout.split_sizes(kohya, len(names), lora), records.get(kohya))
        out.update(parts)
        if record:
            back[kohya] = record
    return out, _with_records(metadata, layout.record, back)


def to_kohya(
    layout: Layout, modules: dict[str, Lora], metadata: dict[str, str]
) -> tuple[dict[str, Lora], dict[str, str]]:
    """Diffusers modules -> Kohya modules (fused where sd-scripts fuses), and the metadata with the record for the
    way back."""
    records = _records(metadata, layout.record)
    grouped: dict[str, tuple[int, dict[int, Lora]]] = {}
    for name, lora in modules.items():
        try:
            kohya, place, count = layout.place(name)
        except ValueError as exc:
            raise LoraforgeError(str(exc), "keep the file in the diffusers layout (--to diffusers)") from None
        grouped.setdefault(kohya, (count, {}))[1][place] = lora
    out: dict[str, Lora] = {}
    back: dict[str, dict] = {}
    for kohya, (count, parts) in grouped.items():
        if count == 1:
            only = parts[0]
            out[kohya] = swap_halves(only) if layout.swapped(kohya, only) else only
            continue
        sizes = layout.fuse_sizes(kohya, parts, count, modules)
        out[kohya], record = fuse(kohya, parts, sizes, records.get(kohya))
        if record:
            back[kohya] = record
    return out, _with_records(metadata, layout.record, back)
