"""Build a small, randomly initialised Chroma model in both layouts, from the same weights, offline:

    python chroma_script.py OUT_DIR

Run it with a Python that has torch and a recent diffusers and transformers (the SimpleTuner venv); never imported by
the orchestrator. OUT_DIR is a diffusers folder (ChromaPipeline: what SimpleTuner and diffusers load) and OUT_DIR/kohya
holds the single files sd-scripts' `flux_train_network.py --model_type chroma` loads (--pretrained_model_name_or_path,
--t5xxl, --ae) and its tokenizer cache (--tokenizer_cache_dir).

sd-scripts (48d368fa) builds Chroma from fixed parameters (library/chroma_models.py chroma_params: hidden 3072,
24 heads, 19 double + 38 single blocks, a 5-layer 5120-wide modulation approximator; 8.9 B parameters) and loads the
file with strict=False into an empty (meta) model: nothing smaller loads. So the kohya file is full size, and the
diffusers model is the smallest Chroma that computes exactly the same thing:
- one double and one single block at Chroma's width (3072, 24 x 128 heads, MLP 12288): ~370 M parameters;
- the kohya file's other 18 double and 37 single blocks are all zero, and a zero block adds nothing to its residual
  stream (its output projections are zero), as do the approximator's zero layers (one in diffusers, five in kohya);
- the approximator ignores the modulation index (its input columns for the index embedding are zero), so every
  block gets the same modulation vectors whichever block count distributes them;
- T5-XXL and the VAE as in sd3_script.py (full-size T5 as a sparse file equal to a one-zero-layer T5; the 16-channel
  VAE that sd-scripts' Flux AutoEncoder fixes, at full size, Flux's scale and shift).
The zero tensors are holes in sparse files: the Chroma file reads as 17.8 GB and takes ~0.7 GB of disk, but
sd-scripts still maps and computes all of it (bf16) on each step.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sd3_script import (  # noqa: E402  (sibling scripts; this file runs outside the package)
    CLIP_L_TOKENIZER,
    full_t5,
    make_tokenizers,
    round_to_bf16,
    same_tensors,
    sd3_vae,
    small_t5,
    write_safetensors,
    write_tokenizer_cache,
    write_vae_ldm,
    zero_layers,
)

HIDDEN, MLP = 3072, 12288  # fixed by sd-scripts' chroma_params (and diffusers' Chroma converter)
FULL_DOUBLE, FULL_SINGLE, FULL_APPROXIMATOR = 19, 38, 5
APPROX = 5120


def chroma_to_bfl(state: dict) -> dict:
    """diffusers ChromaTransformer2DModel keys -> the BFL-style keys sd-scripts' Chroma uses (the inverse of
    diffusers' convert_chroma_transformer_checkpoint_to_diffusers; checked against it by the caller)."""
    import torch

    s = dict(state)
    out = {
        "txt_in.weight": s.pop("context_embedder.weight"),
        "txt_in.bias": s.pop("context_embedder.bias"),
        "img_in.weight": s.pop("x_embedder.weight"),
        "img_in.bias": s.pop("x_embedder.bias"),
        "final_layer.linear.weight": s.pop("proj_out.weight"),
        "final_layer.linear.bias": s.pop("proj_out.bias"),
    }
    g = "distilled_guidance_layer."
    for k in [k for k in s if k.startswith(g)]:
        new = k.replace(".linear_1.", ".in_layer.").replace(".linear_2.", ".out_layer.")
        if ".norms." in k:
            new = new.replace(".weight", ".scale")
        out[new] = s.pop(k)
    doubles = sorted({int(k.split(".")[1]) for k in s if k.startswith("transformer_blocks.")})
    singles = sorted({int(k.split(".")[1]) for k in s if k.startswith("single_transformer_blocks.")})
    for i in doubles:
        d, o = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for w in ("weight", "bias"):
            out[f"{o}img_attn.qkv.{w}"] = torch.cat([s.pop(f"{d}attn.to_{x}.{w}") for x in "qkv"])
            out[f"{o}txt_attn.qkv.{w}"] = torch.cat([s.pop(f"{d}attn.add_{x}_proj.{w}") for x in "qkv"])
            out[f"{o}img_attn.proj.{w}"] = s.pop(f"{d}attn.to_out.0.{w}")
            out[f"{o}txt_attn.proj.{w}"] = s.pop(f"{d}attn.to_add_out.{w}")
            out[f"{o}img_mlp.0.{w}"] = s.pop(f"{d}ff.net.0.proj.{w}")
            out[f"{o}img_mlp.2.{w}"] = s.pop(f"{d}ff.net.2.{w}")
            out[f"{o}txt_mlp.0.{w}"] = s.pop(f"{d}ff_context.net.0.proj.{w}")
            out[f"{o}txt_mlp.2.{w}"] = s.pop(f"{d}ff_context.net.2.{w}")
        out[f"{o}img_attn.norm.query_norm.scale"] = s.pop(f"{d}attn.norm_q.weight")
        out[f"{o}img_attn.norm.key_norm.scale"] = s.pop(f"{d}attn.norm_k.weight")
        out[f"{o}txt_attn.norm.query_norm.scale"] = s.pop(f"{d}attn.norm_added_q.weight")
        out[f"{o}txt_attn.norm.key_norm.scale"] = s.pop(f"{d}attn.norm_added_k.weight")
    for i in singles:
        d, o = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for w in ("weight", "bias"):
            parts = [s.pop(f"{d}attn.to_{x}.{w}") for x in "qkv"] + [s.pop(f"{d}proj_mlp.{w}")]
            out[f"{o}linear1.{w}"] = torch.cat(parts)
            out[f"{o}linear2.{w}"] = s.pop(f"{d}proj_out.{w}")
        out[f"{o}norm.query_norm.scale"] = s.pop(f"{d}attn.norm_q.weight")
        out[f"{o}norm.key_norm.scale"] = s.pop(f"{d}attn.norm_k.weight")
    if s:
        raise RuntimeError(f"unmapped Chroma keys: {sorted(s)[:8]}")
    return out


def full_chroma_zeros(small: dict) -> dict:
    """name -> shape of the zero blocks and approximator layers that make ``small`` (BFL keys) sd-scripts' full
    Chroma: every tensor of a double or single block, or an approximator layer, that ``small`` lacks."""
    zeros: dict = {}
    templates = {k: tuple(v.shape) for k, v in small.items()}
    for name, shape in templates.items():
        parts = name.split(".")
        if name.startswith(("double_blocks.0.", "single_blocks.0.")):
            count = FULL_DOUBLE if parts[0] == "double_blocks" else FULL_SINGLE
            for i in range(1, count):
                zeros[".".join([parts[0], str(i), *parts[2:]])] = shape
        elif name.startswith(("distilled_guidance_layer.layers.0.", "distilled_guidance_layer.norms.0.")):
            for i in range(1, FULL_APPROXIMATOR):
                zeros[".".join([*parts[:2], str(i), *parts[3:]])] = shape
    return zeros


def build(out: Path) -> None:
    import torch
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler
    from diffusers.loaders.single_file_utils import convert_chroma_transformer_checkpoint_to_diffusers

    torch.manual_seed(0)
    tmp = out.parent / (out.name + ".partial")
    _, tok_l, _, tok_t5 = make_tokenizers(out)
    t5 = small_t5(len(tok_t5))
    zero_layers(t5)
    vae = sd3_vae()
    vae.register_to_config(scaling_factor=0.3611, shift_factor=0.1159)  # FLUX.1's AE, which Chroma uses
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels in 2x2 packed patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,
        axes_dims_rope=(16, 56, 56),
        approximator_num_channels=64,
        approximator_hidden_dim=APPROX,
        approximator_layers=1,  # zero (below), as the full file's five: diffusers' converter wants at least one
    )
    with torch.no_grad():
        approximator = transformer.distilled_guidance_layer
        for layer in (*approximator.layers, *approximator.norms):
            for p in layer.parameters():
                p.zero_()
        approximator.in_proj.weight[:, 32:] = 0  # columns of the modulation-index embedding: see the docstring
    round_to_bf16(t5, vae, transformer)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)
    pipe = ChromaPipeline(scheduler=scheduler, vae=vae, text_encoder=t5, tokenizer=tok_t5, transformer=transformer)
    pipe.save_pretrained(str(tmp), safe_serialization=True)

    kohya = tmp / "kohya"
    kohya.mkdir()
    # sd-scripts' Flux tokenizing loads a CLIP-L tokenizer even for Chroma, which never uses it
    raw = out.parent / (out.name + ".tokenizer")
    write_tokenizer_cache(kohya / "tokenizers", raw, {CLIP_L_TOKENIZER: tok_l}, tok_t5)
    state = {k: v.detach() for k, v in transformer.state_dict().items()}
    bfl = chroma_to_bfl(state)
    same_tensors(convert_chroma_transformer_checkpoint_to_diffusers(dict(bfl)), state, "Chroma")
    write_safetensors(kohya / "chroma.safetensors", bfl, full_chroma_zeros(bfl))
    write_safetensors(kohya / "t5xxl.safetensors", *full_t5({k: v.detach() for k, v in t5.state_dict().items()}))
    write_vae_ldm(vae, kohya / "ae.safetensors")
    os.replace(tmp, out)  # a half-built model is never found under the final name
    print(f"tiny chroma written to {out}", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve())
