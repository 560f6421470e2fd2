"""Lumina Image 2.0 LoRAs between sd-scripts' layout (networks.lora_lumina: the original Next-DiT names) and diffusers'.

sd-scripts trains ``lora_unet_{layers,noise_refiner,context_refiner}_{i}_{attention_qkv, attention_out,
feed_forward_w1, feed_forward_w2, feed_forward_w3, adaLN_modulation_1}`` (the context refiner has no modulation),
``final_layer_linear`` and ``final_layer_adaLN_modulation_1`` (180 modules on the 2B model), with embedder_dims the
embedders too, and Gemma 2 as lora_te_. diffusers' Lumina 2 loader reads only "diffusion_model."-prefixed files, with
the 2B model's q/k/v sizes fixed in its code, so it loads nothing of sd-scripts' files. The mapping (the one diffusers'
single-file converter, convert_lumina2_to_diffusers, applies to the checkpoint):

- attention.qkv -> attn.to_q, attn.to_k, attn.to_v: rows of q = heads x head_dim, then k and v, kv_heads x head_dim
  each (grouped-query attention: 2304 + 768 + 768 on the 2B model). Lumina's head_dim is hidden / heads, so q has as
  many rows as qkv has inputs, and k and v share the rest equally: the sizes come from the tensors of each file;
- attention.out -> attn.to_out.0; feed_forward.w1 / w2 / w3 -> feed_forward.linear_1 / linear_2 / linear_3;
  adaLN_modulation.1 -> norm1.linear (the same four chunks in the same order);
- final_layer.linear -> norm_out.linear_2, final_layer.adaLN_modulation.1 -> norm_out.linear_1 (one scale, no
  halves to swap).
"""

from __future__ import annotations

import re

from orchestrator.errors import LoraforgeError
from orchestrator.lora import fused
from orchestrator.lora import keys as K
from orchestrator.lora.fused import Lora

RECORD = "loraforge_fused"
BLOCK = {
    "attention_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "attention_out": ("attn.to_out.0",),
    "feed_forward_w1": ("feed_forward.linear_1",),
    "feed_forward_w2": ("feed_forward.linear_2",),
    "feed_forward_w3": ("feed_forward.linear_3",),
    "adaLN_modulation_1": ("norm1.linear",),
}
OUTSIDE_BLOCKS = {  # the final layer by default; the embedders with sd-scripts' embedder_dims option
    "final_layer_linear": "norm_out.linear_2",
    "final_layer_adaLN_modulation_1": "norm_out.linear_1",
    "x_embedder": "x_embedder",
    "t_embedder_mlp_0": "time_caption_embed.timestep_embedder.linear_1",
    "t_embedder_mlp_2": "time_caption_embed.timestep_embedder.linear_2",
    "cap_embedder_1": "time_caption_embed.caption_embedder.1",
}
TEXT = {"lora_te": "text_encoder"}  # Gemma 2
_KOHYA = re.compile(r"lora_unet_(layers|noise_refiner|context_refiner)_(\d+)_(\w+)$")
_DIFFUSERS = re.compile(r"transformer\.(layers|noise_refiner|context_refiner)\.(\d+)\.(.+)$")


def kohya_to_diffusers_names(module: str) -> tuple[str, ...]:
    """'lora_unet_noise_refiner_1_attention_qkv' -> ('transformer.noise_refiner.1.attn.to_q', ...to_k, ...to_v)."""
    if match := _KOHYA.match(module):
        block, index, name = match.groups()
        if name in BLOCK:
            return tuple(f"transformer.{block}.{index}.{part}" for part in BLOCK[name])
    elif module.startswith("lora_unet_") and module[len("lora_unet_") :] in OUTSIDE_BLOCKS:
        return (f"transformer.{OUTSIDE_BLOCKS[module[len('lora_unet_') :]]}",)
    elif module.startswith("lora_te_"):
        return (f"text_encoder.{K.split_module(module[len('lora_te_') :])}",)
    raise ValueError(f"not a Lumina 2 module sd-scripts trains: {module}")


def diffusers_to_kohya_name(module: str) -> tuple[str, int, int]:
    """'transformer.layers.5.attn.to_v' -> ('lora_unet_layers_5_attention_qkv', 2, 3)."""
    if match := _DIFFUSERS.match(module):
        block, index, path = match.groups()
        for name, parts in BLOCK.items():
            if path in parts:
                return f"lora_unet_{block}_{index}_{name}", parts.index(path), len(parts)
    elif module.startswith("transformer."):
        for name, path in OUTSIDE_BLOCKS.items():
            if module == f"transformer.{path}":
                return f"lora_unet_{name}", 0, 1
    elif module.startswith("text_encoder."):
        return f"lora_te_{module[len('text_encoder.') :].replace('.', '_')}", 0, 1
    raise ValueError(f"{module} has no counterpart in sd-scripts' Lumina 2 LoRA layout")


def _split_sizes(kohya: str, parts: int, lora: Lora) -> list[int]:
    """q = hidden rows (heads x hidden / heads), then k and v of kv_heads x head_dim each: the rest, halved."""
    rows, hidden = lora.up.shape[0], lora.down.shape[1]
    kv = (rows - hidden) // 2
    if kv <= 0 or hidden + 2 * kv != rows:
        raise LoraforgeError(
            f"{kohya}: up has {rows} rows, which do not split into q ({hidden} rows) and two equal k, v parts",
            "is this LoRA for Lumina 2? its qkv shapes do not match",
        )
    return [hidden, kv, kv]


def _fuse_sizes(kohya: str, parts: dict[int, Lora], count: int, modules: dict[str, Lora]) -> list[int]:
    """q's rows are the block's width; k and v have the same rows, so a trained one tells an untrained one's."""
    q = parts[0].up.shape[0] if 0 in parts else next(iter(parts.values())).down.shape[1]
    known = {parts[j].up.shape[0] for j in (1, 2) if j in parts}
    if len(known) != 1:
        problem = "k and v differ in rows" if known else "neither k nor v is trained, so their rows are unknown"
        raise LoraforgeError(f"{kohya}: {problem}, and sd-scripts' fused qkv needs them",
                             "keep the file in the diffusers layout (diffusers loads it as it is)")  # fmt: skip
    kv = known.pop()
    return [q, kv, kv]


LAYOUT = fused.Layout(
    family="Lumina 2",
    record=RECORD,
    parts=kohya_to_diffusers_names,
    place=diffusers_to_kohya_name,
    swapped=lambda _kohya, _lora: False,
    split_sizes=_split_sizes,
    fuse_sizes=_fuse_sizes,
)


def kohya_to_diffusers(modules: dict[str, Lora], metadata: dict[str, str]) -> tuple[dict[str, Lora], dict[str, str]]:
    return fused.to_diffusers(LAYOUT, modules, metadata)


def diffusers_to_kohya(modules: dict[str, Lora], metadata: dict[str, str]) -> tuple[dict[str, Lora], dict[str, str]]:
    return fused.to_kohya(LAYOUT, modules, metadata)
