"""Flux (and Chroma) LoRAs between sd-scripts' layout (BFL module names, fused qkv and linear1) and diffusers'.

sd-scripts' lora_flux names Black Forest Labs' modules (keys.py has the tables): q, k and v fused in one qkv Linear
per stream, and in single blocks q, k, v and the MLP input fused in linear1, which diffusers splits into one Linear
per projection; fused.py splits and fuses them. The final layer's modulation gives (shift, scale) where diffusers'
AdaLayerNormContinuous gives (scale, shift): its rows are swapped.

Chroma is Flux without the per-block modulation Linears (its modulation comes from the distilled_guidance_layer) and
without guidance_in / time_in / vector_in; sd-scripts' `--model_type chroma` writes the same module names for the rest,
and diffusers' Chroma transformer has the same module names as Flux's, so this layout serves both.
"""

from __future__ import annotations

from orchestrator.errors import LoraforgeError
from orchestrator.lora import fused
from orchestrator.lora import keys as K
from orchestrator.lora.fused import Lora

__all__ = ["Lora", "RECORD", "LAYOUT", "kohya_to_diffusers", "diffusers_to_kohya"]

RECORD = "loraforge_flux_fused"
FLUX_MLP_RATIO = 4  # FLUX.1's MLP width over its hidden width; used only when no tensor in the file shows the width


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


def _fuse_sizes(kohya: str, parts: dict[int, Lora], count: int, modules: dict[str, Lora]) -> list[int]:
    hidden = next(iter(parts.values())).down.shape[1]
    if count == 3:
        return [hidden] * 3
    mlp = parts[3].up.shape[0] if 3 in parts else _mlp_width(modules) or 0
    if mlp <= 0:
        raise LoraforgeError(f"{kohya}: cannot tell the MLP width of this Flux model", "is this a Flux LoRA?")
    return [hidden] * 3 + [mlp]


LAYOUT = fused.Layout(
    family="Flux",
    record=RECORD,
    parts=K.flux_kohya_to_diffusers,
    place=K.flux_diffusers_to_kohya,
    swapped=lambda kohya, _lora: kohya == K.FLUX_SWAPPED_HALVES,
    split_sizes=_split_sizes,
    fuse_sizes=_fuse_sizes,
)


def kohya_to_diffusers(modules: dict[str, Lora], metadata: dict[str, str]) -> tuple[dict[str, Lora], dict[str, str]]:
    """Kohya Flux modules -> diffusers modules, and the metadata with the record for the way back."""
    return fused.to_diffusers(LAYOUT, modules, metadata)


def diffusers_to_kohya(modules: dict[str, Lora], metadata: dict[str, str]) -> tuple[dict[str, Lora], dict[str, str]]:
    """Diffusers Flux modules -> Kohya modules (fused where sd-scripts fuses), and the metadata with the record for
    the way back."""
    return fused.to_kohya(LAYOUT, modules, metadata)
