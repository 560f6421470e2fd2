"""LoRA key layouts and conversion between them, as pure string work.

Kohya (sd-scripts, A1111, Forge, ComfyUI):  lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight / .lora_up
    .weight / .alpha; text encoders lora_te_ (SD 1.5) or lora_te1_ / lora_te2_ (SDXL). sd-scripts names SD 1.5 modules
    the diffusers way (dots become underscores) and SDXL modules the original (SGM) way: input_blocks_4_1_...
    Flux (sd-scripts' lora_flux): Black Forest Labs' module names, lora_unet_double_blocks_0_img_attn_qkv, ...
    single_blocks_0_linear1, with q, k, v (and the MLP input) fused in one Linear; text encoders lora_te1_ (CLIP-L)
    and lora_te3_ (T5-XXL).
    SD3 (sd3.py) and Lumina 2 (lumina2.py) keep their tables beside their conversions; Chroma uses Flux's.
Diffusers / PEFT (SimpleTuner, diffusers):  unet.down_blocks.0.attentions.0.proj_in.lora_A.weight / lora_B.weight;
    text_encoder. / text_encoder_2. / transformer.; alpha is not per key but in the file's lora_adapter_metadata
    (PEFT's lora_alpha, r, and alpha_pattern for modules that differ).
"""

from __future__ import annotations

import re

# Compound names in diffusers / transformers module paths: underscores inside them are not path separators.
COMPOUNDS = {
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "single_transformer_blocks", "proj_in",
    "proj_out", "to_q", "to_k", "to_v", "to_out", "conv_shortcut", "time_emb_proj", "text_model", "self_attn",
    "q_proj", "k_proj", "v_proj", "out_proj", "final_layer_norm", "conv_in", "conv_out", "time_embedding",
    "linear_1", "linear_2", "add_embedding", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "ff_context",
    "proj_mlp", "norm_out", "layer_norm1", "layer_norm2", "token_embedding", "position_embedding",
    "text_projection", "input_blocks", "output_blocks", "middle_block", "in_layers", "out_layers", "emb_layers",
    "skip_connection", "wi_0", "wi_1", "o_proj", "gate_proj", "up_proj", "down_proj",
}  # fmt: skip
_LONGEST = max(len(c.split("_")) for c in COMPOUNDS)

KOHYA_PREFIXES = {
    "lora_unet": "unet",
    "lora_te": "text_encoder",
    "lora_te1": "text_encoder",
    "lora_te2": "text_encoder_2",
}
DIFFUSERS_PREFIXES = {"unet": "lora_unet", "text_encoder": "lora_te", "text_encoder_2": "lora_te2"}
_RESNET_INNER = {
    "in_layers.2": "conv1",
    "out_layers.3": "conv2",
    "emb_layers.1": "time_emb_proj",
    "skip_connection": "conv_shortcut",
}


def layout(keys: list[str]) -> str:
    """'kohya', 'diffusers', or 'unknown' (not a LoRA)."""
    if any(k.startswith("lora_") and (".lora_down." in k or ".lora_up." in k) for k in keys):
        return "kohya"
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "diffusers"
    return "unknown"


def split_module(underscored: str) -> str:
    """'down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q' -> 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q'"""
    parts = underscored.split("_")
    out: list[str] = []
    i = 0
    while i < len(parts):
        for width in range(min(_LONGEST, len(parts) - i), 1, -1):
            candidate = "_".join(parts[i : i + width])
            if candidate in COMPOUNDS:
                out.append(candidate)
                i += width
                break
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out)


def sgm_to_diffusers(path: str) -> str:
    """SDXL's original block names (sd-scripts' SDXL LoRAs) to diffusers': input_blocks.4.1 -> down_blocks.1.attentions.0."""
    if match := re.match(r"input_blocks\.(\d+)\.(\d+)\.?(.*)", path):
        n, m, rest = int(match.group(1)), int(match.group(2)), match.group(3)
        block, index = (n - 1) // 3, (n - 1) % 3
        if index == 2:
            return f"down_blocks.{block}.downsamplers.0.conv"
        head = f"down_blocks.{block}.{'resnets' if m == 0 else 'attentions'}.{index}"
    elif match := re.match(r"middle_block\.(\d+)\.?(.*)", path):
        m, rest = int(match.group(1)), match.group(2)
        head = {0: "mid_block.resnets.0", 1: "mid_block.attentions.0", 2: "mid_block.resnets.1"}[m]
    elif match := re.match(r"output_blocks\.(\d+)\.(\d+)\.?(.*)", path):
        n, m, rest = int(match.group(1)), int(match.group(2)), match.group(3)
        block, index = n // 3, n % 3
        if m == 0:
            head = f"up_blocks.{block}.resnets.{index}"
        elif m == 1 and block < 2:
            head = f"up_blocks.{block}.attentions.{index}"
        else:
            return f"up_blocks.{block}.upsamplers.0.conv"
    else:
        return path
    if head.split(".")[-2] == "resnets":
        rest = _RESNET_INNER.get(rest, rest)
    return f"{head}.{rest}" if rest else head


def kohya_module_to_diffusers(module: str) -> str:
    """'lora_unet_input_blocks_4_1_proj_in' -> 'unet.down_blocks.1.attentions.0.proj_in'."""
    for prefix in sorted(KOHYA_PREFIXES, key=len, reverse=True):
        if module.startswith(prefix + "_"):
            path = split_module(module[len(prefix) + 1 :])
            if prefix == "lora_unet":
                path = sgm_to_diffusers(path)
            return f"{KOHYA_PREFIXES[prefix]}.{path}"
    raise ValueError(f"not a Kohya LoRA module name: {module}")


def diffusers_module_to_kohya(module: str, sdxl: bool) -> str:
    """'text_encoder.text_model.encoder.layers.0.self_attn.q_proj' -> 'lora_te1_text_model_encoder_layers_0_self_attn_q_proj'."""
    root, _, path = module.partition(".")
    if root == "transformer":
        raise ValueError(f"{module} is a transformer module of a family whose names do not map one to one")
    prefix = DIFFUSERS_PREFIXES.get(root)
    if prefix is None:
        raise ValueError(f"not a diffusers LoRA module name: {module}")
    if sdxl and prefix == "lora_te":
        prefix = "lora_te1"
    return f"{prefix}_{path.replace('.', '_')}"


# Flux. sd-scripts names transformer modules as Black Forest Labs' reference code does (double_blocks / single_blocks,
# q, k and v fused in one qkv Linear, and in single blocks q, k, v and the MLP input fused in linear1); diffusers has
# one Linear per projection. Each Kohya module maps to its diffusers parts, in the order of the fused Linear's rows.
FLUX_DOUBLE = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_attn_proj": ("attn.to_out.0",),
    "img_mlp_0": ("ff.net.0.proj",),
    "img_mlp_2": ("ff.net.2",),
    "img_mod_lin": ("norm1.linear",),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_attn_proj": ("attn.to_add_out",),
    "txt_mlp_0": ("ff_context.net.0.proj",),
    "txt_mlp_2": ("ff_context.net.2",),
    "txt_mod_lin": ("norm1_context.linear",),
}
FLUX_SINGLE = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation_lin": ("norm.linear",),
}
FLUX_OUTSIDE_BLOCKS = {  # sd-scripts trains the embedders with its in_dims option
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "time_in_in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in_out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in_in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in_out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in_in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in_out_layer": "time_text_embed.guidance_embedder.linear_2",
    "final_layer_linear": "proj_out",
    "final_layer_adaLN_modulation_1": "norm_out.linear",
}
# BFL's final layer modulation gives (shift, scale), diffusers' AdaLayerNormContinuous (scale, shift): the output
# rows of this one module are the two halves swapped.
FLUX_SWAPPED_HALVES = "lora_unet_final_layer_adaLN_modulation_1"
FLUX_TEXT = {"lora_te1": "text_encoder", "lora_te3": "text_encoder_2"}  # CLIP-L, T5-XXL
_FLUX_KOHYA = re.compile(r"lora_unet_(double|single)_blocks_(\d+)_(\w+)$")
_FLUX_DIFFUSERS = re.compile(r"transformer\.(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$")


def flux_kohya_to_diffusers(module: str) -> tuple[str, ...]:
    """'lora_unet_single_blocks_0_linear1' -> ('transformer.single_transformer_blocks.0.attn.to_q', ..., '...proj_mlp')."""
    if match := _FLUX_KOHYA.match(module):
        kind, index, name = match.groups()
        table, block = (
            (FLUX_DOUBLE, "transformer_blocks") if kind == "double" else (FLUX_SINGLE, "single_transformer_blocks")
        )
        if name in table:
            return tuple(f"transformer.{block}.{index}.{part}" for part in table[name])
    elif module.startswith("lora_unet_") and module[len("lora_unet_") :] in FLUX_OUTSIDE_BLOCKS:
        return (f"transformer.{FLUX_OUTSIDE_BLOCKS[module[len('lora_unet_') :]]}",)
    for prefix, root in FLUX_TEXT.items():
        if module.startswith(prefix + "_"):
            return (f"{root}.{split_module(module[len(prefix) + 1 :])}",)
    raise ValueError(f"not a Flux module sd-scripts trains: {module}")


def flux_diffusers_to_kohya(module: str) -> tuple[str, int, int]:
    """'transformer.single_transformer_blocks.0.proj_mlp' -> ('lora_unet_single_blocks_0_linear1', 3, 4): the Kohya
    module, this part's place among its fused parts, and how many parts it has."""
    if match := _FLUX_DIFFUSERS.match(module):
        block, index, path = match.groups()
        table, kind = (FLUX_DOUBLE, "double") if block == "transformer_blocks" else (FLUX_SINGLE, "single")
        for name, parts in table.items():
            if path in parts:
                return f"lora_unet_{kind}_blocks_{index}_{name}", parts.index(path), len(parts)
    elif module.startswith("transformer."):
        for name, path in FLUX_OUTSIDE_BLOCKS.items():
            if module == f"transformer.{path}":
                return f"lora_unet_{name}", 0, 1
    else:
        root, _, path = module.partition(".")
        for prefix, text_root in FLUX_TEXT.items():
            if root == text_root:
                return f"{prefix}_{path.replace('.', '_')}", 0, 1
    raise ValueError(f"{module} has no counterpart in sd-scripts' Flux LoRA layout")
