"""SD3 / SD3.5 LoRAs between sd-scripts' layout (networks.lora_sd3: Stability's MMDiT names) and diffusers'.

sd-scripts trains every Linear of each joint block under the original names, ``lora_unet_joint_blocks_{i}_{x,context}
_block_{attn_qkv, attn_proj, mlp_fc1, mlp_fc2, adaLN_modulation_1}`` (SD3.5 Medium's MMDiT-X blocks add
``x_block_attn2_{qkv,proj}``), with ``emb_dims`` the embedders and the final layer too, and the text encoders as
lora_te1_ (CLIP-L), lora_te2_ (CLIP-G) and lora_te3_ (T5-XXL). diffusers' SD3 loader reads none of these names: it
loads nothing from such a file, without a word. The mapping (the one diffusers' single-file converter applies to
the checkpoint, convert_sd3_transformer_checkpoint_to_diffusers):

- qkv -> to_q, to_k, to_v (the context stream: add_q_proj, add_k_proj, add_v_proj), three equal parts of rows;
- attn.proj -> attn.to_out.0 (context: attn.to_add_out), mlp.fc1 / fc2 -> ff(_context).net.0.proj / net.2,
  adaLN_modulation.1 -> norm1.linear / norm1_context.linear;
- the last block's context stream is "pre-only": its modulation has two parts, (shift, scale) in Stability's order
  and (scale, shift) in diffusers' AdaLayerNormContinuous, so its rows are swapped, as are the final layer's.
  That block is told by its tensors (2 x hidden output rows), not by a block count the LoRA may not show.
"""

from __future__ import annotations

import re

from orchestrator.errors import LoraforgeError
from orchestrator.lora import fused
from orchestrator.lora import keys as K
from orchestrator.lora.fused import Lora

RECORD = "loraforge_fused"
BLOCK = {
    "x_block_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "x_block_attn_proj": ("attn.to_out.0",),
    "x_block_attn2_qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v"),
    "x_block_attn2_proj": ("attn2.to_out.0",),
    "x_block_mlp_fc1": ("ff.net.0.proj",),
    "x_block_mlp_fc2": ("ff.net.2",),
    "x_block_adaLN_modulation_1": ("norm1.linear",),
    "context_block_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "context_block_attn_proj": ("attn.to_add_out",),
    "context_block_mlp_fc1": ("ff_context.net.0.proj",),
    "context_block_mlp_fc2": ("ff_context.net.2",),
    "context_block_adaLN_modulation_1": ("norm1_context.linear",),
}
OUTSIDE_BLOCKS = {  # sd-scripts trains these with its emb_dims option
    "context_embedder": "context_embedder",
    "t_embedder_mlp_0": "time_text_embed.timestep_embedder.linear_1",
    "t_embedder_mlp_2": "time_text_embed.timestep_embedder.linear_2",
    "x_embedder_proj": "pos_embed.proj",  # a Conv2d: its LoRA is 4-d, copied as it is
    "y_embedder_mlp_0": "time_text_embed.text_embedder.linear_1",
    "y_embedder_mlp_2": "time_text_embed.text_embedder.linear_2",
    "final_layer_adaLN_modulation_1": "norm_out.linear",
    "final_layer_linear": "proj_out",
}
TEXT = {"lora_te1": "text_encoder", "lora_te2": "text_encoder_2", "lora_te3": "text_encoder_3"}  # CLIP-L, -G, T5
_KOHYA = re.compile(r"lora_unet_joint_blocks_(\d+)_(\w+)$")
_DIFFUSERS = re.compile(r"transformer\.transformer_blocks\.(\d+)\.(.+)$")
_PRE_ONLY = "context_block_adaLN_modulation_1"


def kohya_to_diffusers_names(module: str) -> tuple[str, ...]:
    """'lora_unet_joint_blocks_0_x_block_attn_qkv' -> ('transformer.transformer_blocks.0.attn.to_q', ...to_k, ...to_v)."""
    if match := _KOHYA.match(module):
        index, name = match.groups()
        if name in BLOCK:
            return tuple(f"transformer.transformer_blocks.{index}.{part}" for part in BLOCK[name])
    elif module.startswith("lora_unet_") and module[len("lora_unet_") :] in OUTSIDE_BLOCKS:
        return (f"transformer.{OUTSIDE_BLOCKS[module[len('lora_unet_') :]]}",)
    for prefix, root in TEXT.items():
        if module.startswith(prefix + "_"):
            return (f"{root}.{K.split_module(module[len(prefix) + 1 :])}",)
    raise ValueError(f"not an SD3 module sd-scripts trains: {module}")


def diffusers_to_kohya_name(module: str) -> tuple[str, int, int]:
    """'transformer.transformer_blocks.3.attn.add_v_proj' -> ('lora_unet_joint_blocks_3_context_block_attn_qkv', 2, 3)."""
    if match := _DIFFUSERS.match(module):
        index, path = match.groups()
        for name, parts in BLOCK.items():
            if path in parts:
                return f"lora_unet_joint_blocks_{index}_{name}", parts.index(path), len(parts)
    elif module.startswith("transformer."):
        for name, path in OUTSIDE_BLOCKS.items():
            if module == f"transformer.{path}":
                return f"lora_unet_{name}", 0, 1
    else:
        root, _, path = module.partition(".")
        for prefix, text_root in TEXT.items():
            if root == text_root:
                return f"{prefix}_{path.replace('.', '_')}", 0, 1
    raise ValueError(f"{module} has no counterpart in sd-scripts' SD3 LoRA layout")


def _swapped(kohya: str, lora: Lora) -> bool:
    if kohya == "lora_unet_final_layer_adaLN_modulation_1":
        return True
    return kohya.endswith(_PRE_ONLY) and len(lora.up.shape) == 2 and lora.up.shape[0] == 2 * lora.down.shape[1]


def _split_sizes(kohya: str, parts: int, lora: Lora) -> list[int]:
    rows, hidden = lora.up.shape[0], lora.down.shape[1]
    if rows != 3 * hidden:
        raise LoraforgeError(
            f"{kohya}: up has {rows} rows, which do not split into q, k and v of a {hidden}-wide SD3 block",
            "is this LoRA for SD3? its qkv shapes do not match",
        )
    return [hidden] * 3


def _fuse_sizes(kohya: str, parts: dict[int, Lora], count: int, modules: dict[str, Lora]) -> list[int]:
    return [next(iter(parts.values())).down.shape[1]] * count  # q, k and v are each hidden wide


LAYOUT = fused.Layout(
    family="SD3",
    record=RECORD,
    parts=kohya_to_diffusers_names,
    place=diffusers_to_kohya_name,
    swapped=_swapped,
    split_sizes=_split_sizes,
    fuse_sizes=_fuse_sizes,
)


def kohya_to_diffusers(modules: dict[str, Lora], metadata: dict[str, str]) -> tuple[dict[str, Lora], dict[str, str]]:
    return fused.to_diffusers(LAYOUT, modules, metadata)


def diffusers_to_kohya(modules: dict[str, Lora], metadata: dict[str, str]) -> tuple[dict[str, Lora], dict[str, str]]:
    return fused.to_kohya(LAYOUT, modules, metadata)
