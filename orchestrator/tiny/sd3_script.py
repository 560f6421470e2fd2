"""Build a tiny, randomly initialised SD3.5 model in both layouts, from the same weights, offline:

    python sd3_script.py OUT_DIR

Run it with a Python that has torch and a recent diffusers and transformers (the SimpleTuner venv); never imported by
the orchestrator. OUT_DIR is a diffusers folder (StableDiffusion3Pipeline: what SimpleTuner and diffusers load) and
OUT_DIR/kohya holds the single files sd-scripts' sd3_train_network.py loads (--pretrained_model_name_or_path,
--clip_l, --clip_g, --t5xxl, --vae) and its tokenizer cache (--tokenizer_cache_dir).

What sd-scripts (48d368fa) fixes and what it reads from the file:
- MMDiT: depth, patch size, positional-embedding size, qk-norm and the context / pooled widths come from the keys
  (library/sd3_utils.py analyze_state_dict_state); hidden = 64 x depth. Two blocks (hidden 128), qk RMS-norm and no
  dual attention: SD3.5-large's block type, which sd-scripts names "5-large". Context in 4096 (T5-XXL's width, which
  the CLIP outputs are padded to), pooled in 2048 (CLIP-L 768 + CLIP-G 1280).
- CLIP-L, CLIP-G and T5-XXL: full configs hard-coded (load_clip_l / load_clip_g / flux_utils.load_t5xxl), loaded with
  strict=False into empty (meta) modules, so every tensor must be there at full size: 123 M, 695 M and 4.76 B
  parameters. The diffusers folder gets small encoders of the same widths that compute exactly what the full ones
  compute: the full files' transformer layers are all zero, so each layer adds nothing to its residual stream and an
  encoder's outputs are its token (+ position) embeddings, final norm and projection, which the small encoders
  (one zero layer, our small vocabulary) share. The zero tensors are holes in sparse files: the T5 file reads as
  9.5 GB but takes ~2 MB of disk; loading it still maps 9.5 GB (sd-scripts reads T5 in the training dtype: bf16).
- VAE: sd3_models.SDVAE has a fixed geometry (channels 128/256/512/512, 16 latent channels, 84 M parameters): full
  size in both layouts (the diffusers AutoencoderKL of SD3), same weights.
Every weight is rounded to bfloat16 first, so the fp32 diffusers files and the bf16 sd-scripts files hold the same
numbers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flux_script import t5_vocab  # noqa: E402  (sibling scripts; this file runs outside the package)
from sdxl_script import write_tokenizer  # noqa: E402

DEPTH = 2
HIDDEN = 64 * DEPTH  # sd-scripts derives depth from the hidden width: hidden = 64 x depth, one head per 64
POS_EMBED_MAX = 32  # positional table 32 x 32 patches: images up to 512 px
# the full sizes sd-scripts builds (library/sd3_utils.py, library/flux_utils.py)
CLIP_L_FULL = {"vocab": 49408, "layers": 12, "ff": 3072}
CLIP_G_FULL = {"vocab": 49408, "layers": 32, "ff": 5120}
T5_FULL = {"vocab": 32128, "layers": 24, "heads": 64, "d_kv": 64, "ff": 10240, "buckets": 32}
# the hub ids sd-scripts looks up in its tokenizer cache (library/strategy_sd3.py, strategy_flux.py)
CLIP_L_TOKENIZER, CLIP_G_TOKENIZER = "openai/clip-vit-large-patch14", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"
T5_TOKENIZER = "google_t5-v1_1-xxl"
DTYPES = {"BF16": 2, "F32": 4, "F16": 2}


def round_to_bf16(*models) -> None:  # type: ignore[no-untyped-def]
    """Every parameter made bf16-exact, so fp32 (diffusers) and bf16 (sd-scripts) files hold the same values."""
    import torch

    with torch.no_grad():
        for model in models:
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())


def write_safetensors(path: Path, tensors: dict, zeros: dict | None = None, metadata: dict | None = None) -> None:
    """A safetensors file in bf16 where ``zeros`` (name -> shape) are holes: a sparse file whose zero tensors take no
    disk. ``tensors`` are torch tensors, written in name order with the holes."""
    import torch

    zeros = zeros or {}
    names = sorted([*tensors, *zeros])
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name in names:
        shape = list(tensors[name].shape) if name in tensors else list(zeros[name])
        count = 1
        for n in shape:
            count *= n
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + 2 * count]}
        offset += 2 * count
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        start = f.tell()
        for name in names:
            if name in tensors:
                f.seek(start + header[name]["data_offsets"][0])
                data = tensors[name].detach().to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()
                for at in range(0, len(data), 1 << 16):  # zero runs (padded embedding rows) stay holes too
                    chunk = data[at : at + (1 << 16)]
                    if chunk.count(0) == len(chunk):
                        f.seek(len(chunk), os.SEEK_CUR)
                    else:
                        f.write(chunk)
        f.truncate(start + offset)  # the trailing holes, if any


def full_clip(tiny: dict, hidden: int, full: dict) -> tuple[dict, dict]:
    """A full-size CLIP text encoder state dict equal in function to ``tiny`` (one all-zero layer): embeddings padded
    to the full vocabulary with zero rows, every layer zero (a hole), final norm and projection copied."""
    import torch

    kept, zeros = {}, {}
    for name, t in tiny.items():
        if name == "text_model.embeddings.token_embedding.weight":
            pad = torch.zeros(full["vocab"] - t.shape[0], hidden)
            kept[name] = torch.cat([t, pad])
        elif ".encoder.layers." not in name and "position_ids" not in name:
            kept[name] = t
    for layer in range(full["layers"]):
        prefix = f"text_model.encoder.layers.{layer}."
        for sub in ("q_proj", "k_proj", "v_proj", "out_proj"):
            zeros[f"{prefix}self_attn.{sub}.weight"] = (hidden, hidden)
            zeros[f"{prefix}self_attn.{sub}.bias"] = (hidden,)
        for norm in ("layer_norm1", "layer_norm2"):
            zeros[f"{prefix}{norm}.weight"] = (hidden,)
            zeros[f"{prefix}{norm}.bias"] = (hidden,)
        zeros[f"{prefix}mlp.fc1.weight"] = (full["ff"], hidden)
        zeros[f"{prefix}mlp.fc1.bias"] = (full["ff"],)
        zeros[f"{prefix}mlp.fc2.weight"] = (hidden, full["ff"])
        zeros[f"{prefix}mlp.fc2.bias"] = (hidden,)
    return kept, zeros


def full_t5(tiny: dict) -> tuple[dict, dict]:
    """T5-XXL's encoder at full size, equal in function to ``tiny`` (d_model 4096, one all-zero layer): the shared
    embedding padded with zero rows, all 24 layers zero (holes), the final norm copied."""
    import torch

    d, f = 4096, T5_FULL["ff"]
    inner = T5_FULL["heads"] * T5_FULL["d_kv"]
    emb = tiny["shared.weight"]
    kept = {
        "shared.weight": torch.cat([emb, torch.zeros(T5_FULL["vocab"] - emb.shape[0], d)]),
        "encoder.final_layer_norm.weight": tiny["encoder.final_layer_norm.weight"],
    }
    zeros: dict = {}
    for b in range(T5_FULL["layers"]):
        p = f"encoder.block.{b}.layer."
        for sub in ("q", "k", "v"):
            zeros[f"{p}0.SelfAttention.{sub}.weight"] = (inner, d)
        zeros[f"{p}0.SelfAttention.o.weight"] = (d, inner)
        zeros[f"{p}0.layer_norm.weight"] = (d,)
        zeros[f"{p}1.DenseReluDense.wi_0.weight"] = (f, d)
        zeros[f"{p}1.DenseReluDense.wi_1.weight"] = (f, d)
        zeros[f"{p}1.DenseReluDense.wo.weight"] = (d, f)
        zeros[f"{p}1.layer_norm.weight"] = (d,)
    zeros["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
        T5_FULL["buckets"],
        T5_FULL["heads"],
    )
    return kept, zeros


def zero_layers(model) -> None:  # type: ignore[no-untyped-def]
    """Zero every transformer layer of a text encoder: each then adds nothing to its residual stream."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".layers." in name or ".block." in name:
                p.zero_()


def vae_to_ldm(state: dict) -> dict:
    """diffusers AutoencoderKL keys -> the LDM keys of sd-scripts' SDVAE and Flux AutoEncoder (the inverse of
    diffusers' convert_ldm_vae_checkpoint; checked against it by the caller)."""
    out = {}
    ups = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k)))
    for key, t in state.items():
        k = key
        k = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", k)
        k = re.sub(r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block.", k)
        k = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", k)
        k = re.sub(r"up_blocks\.(\d+)\.resnets\.", lambda m: f"up.{ups - 1 - int(m.group(1))}.block.", k)
        k = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"up.{ups - 1 - int(m.group(1))}.upsample.", k)
        k = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", k)
        k = k.replace("conv_shortcut", "nin_shortcut")
        if ".mid_block.attentions.0." in k:
            k = k.replace("mid_block.attentions.0.", "mid.attn_1.")
            k = k.replace("group_norm.", "norm.").replace("to_q.", "q.").replace("to_k.", "k.").replace("to_v.", "v.")
            k = k.replace("to_out.0.", "proj_out.")
            if t.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                t = t[:, :, None, None]
        out[k] = t
    return out


def swap_halves(t):  # type: ignore[no-untyped-def]
    """diffusers orders a final adaLN's modulation (scale, shift); SAI's and BFL's order is (shift, scale)."""
    import torch

    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def mmdit_to_sai(state: dict, depth: int) -> dict:
    """diffusers SD3Transformer2DModel keys -> SAI's MMDiT keys (the inverse of diffusers'
    convert_sd3_transformer_checkpoint_to_diffusers; checked against it by the caller)."""
    import torch

    s = dict(state)
    out = {
        "pos_embed": s.pop("pos_embed.pos_embed"),
        "x_embedder.proj.weight": s.pop("pos_embed.proj.weight"),
        "x_embedder.proj.bias": s.pop("pos_embed.proj.bias"),
        "context_embedder.weight": s.pop("context_embedder.weight"),
        "context_embedder.bias": s.pop("context_embedder.bias"),
        "final_layer.linear.weight": s.pop("proj_out.weight"),
        "final_layer.linear.bias": s.pop("proj_out.bias"),
        "final_layer.adaLN_modulation.1.weight": swap_halves(s.pop("norm_out.linear.weight")),
        "final_layer.adaLN_modulation.1.bias": swap_halves(s.pop("norm_out.linear.bias")),
    }
    for ours, theirs in (("timestep_embedder", "t_embedder"), ("text_embedder", "y_embedder")):
        for i, j in ((1, 0), (2, 2)):
            for w in ("weight", "bias"):
                out[f"{theirs}.mlp.{j}.{w}"] = s.pop(f"time_text_embed.{ours}.linear_{i}.{w}")
    for i in range(depth):
        d, o = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        last = i == depth - 1  # the last block's context stream stops after attention (no proj, no MLP)
        for w in ("weight", "bias"):
            out[f"{o}x_block.attn.qkv.{w}"] = torch.cat([s.pop(f"{d}attn.to_{x}.{w}") for x in "qkv"])
            out[f"{o}context_block.attn.qkv.{w}"] = torch.cat([s.pop(f"{d}attn.add_{x}_proj.{w}") for x in "qkv"])
            out[f"{o}x_block.attn.proj.{w}"] = s.pop(f"{d}attn.to_out.0.{w}")
            out[f"{o}x_block.adaLN_modulation.1.{w}"] = s.pop(f"{d}norm1.linear.{w}")
            ctx = s.pop(f"{d}norm1_context.linear.{w}")
            out[f"{o}context_block.adaLN_modulation.1.{w}"] = swap_halves(ctx) if last else ctx
            out[f"{o}x_block.mlp.fc1.{w}"] = s.pop(f"{d}ff.net.0.proj.{w}")
            out[f"{o}x_block.mlp.fc2.{w}"] = s.pop(f"{d}ff.net.2.{w}")
            if not last:
                out[f"{o}context_block.attn.proj.{w}"] = s.pop(f"{d}attn.to_add_out.{w}")
                out[f"{o}context_block.mlp.fc1.{w}"] = s.pop(f"{d}ff_context.net.0.proj.{w}")
                out[f"{o}context_block.mlp.fc2.{w}"] = s.pop(f"{d}ff_context.net.2.{w}")
        for ours, theirs in (("norm_q", "x_block.attn.ln_q"), ("norm_k", "x_block.attn.ln_k")):
            out[f"{o}{theirs}.weight"] = s.pop(f"{d}attn.{ours}.weight")
        for ours, theirs in (("norm_added_q", "context_block.attn.ln_q"), ("norm_added_k", "context_block.attn.ln_k")):
            out[f"{o}{theirs}.weight"] = s.pop(f"{d}attn.{ours}.weight")
    if s:
        raise RuntimeError(f"unmapped SD3 keys: {sorted(s)[:8]}")
    return out


def same_tensors(a: dict, b: dict, what: str) -> None:
    """Stop the build when a conversion does not round-trip exactly through diffusers' own converter."""
    import torch

    if set(a) != set(b):
        raise RuntimeError(f"{what}: keys differ: {sorted(set(a) ^ set(b))[:8]}")
    for k in a:
        if a[k].shape != b[k].shape or not torch.equal(a[k].float(), b[k].float()):
            raise RuntimeError(f"{what}: {k} differs after the round trip")


def make_tokenizers(out: Path):  # type: ignore[no-untyped-def]
    """The CLIP tokenizers (the tiny SDXL's hand-made BPE; CLIP-G pads with "!", id 0, as bigG's does, and as
    sd-scripts sets it) and a small T5 unigram tokenizer, saved in one raw folder each."""
    from transformers import CLIPTokenizer, T5TokenizerFast

    raw = out.parent / (out.name + ".tokenizer")
    vocab = write_tokenizer(raw)
    clip_l = CLIPTokenizer.from_pretrained(str(raw), model_max_length=77)
    clip_g = CLIPTokenizer.from_pretrained(str(raw), model_max_length=77, pad_token="!")
    t5 = T5TokenizerFast(vocab=t5_vocab(), extra_ids=0, model_max_length=256)
    return vocab, clip_l, clip_g, t5


def write_tokenizer_cache(cache: Path, raw: Path, clip: dict, t5) -> None:  # type: ignore[no-untyped-def]
    """sd-scripts loads its tokenizers from <cache>/<hub id with / as _>: the same tokenizers as the diffusers
    folder's, plus the BPE's vocab.json and merges.txt for the CLIP ones (transformers 4.54's CLIPTokenizer reads
    those; 5.x saves tokenizer.json only). ``clip`` maps a hub id to its tokenizer."""
    folders = []
    for hub_id, tokenizer in clip.items():
        folder = cache / hub_id.replace("/", "_")
        tokenizer.save_pretrained(str(folder))
        for f in ("vocab.json", "merges.txt"):
            shutil.copy(raw / f, folder / f)
        folders.append(folder)
    t5.save_pretrained(str(cache / T5_TOKENIZER))
    for folder in [*folders, cache / T5_TOKENIZER]:
        # 5.x's list-valued extra_special_tokens stops 4.54's loader ('list' object has no attribute 'keys')
        config = folder / "tokenizer_config.json"
        settings = json.loads(config.read_text(encoding="utf-8"))
        settings.pop("extra_special_tokens", None)
        config.write_text(json.dumps(settings, indent=2), encoding="utf-8")


def clip_config(vocab: dict, hidden: int, heads: int, act: str):  # type: ignore[no-untyped-def]
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=8,  # the layer is all zero: its width changes nothing
        num_hidden_layers=1,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=hidden,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],  # the highest id, as in CLIP: both pooling rules find the same token
        pad_token_id=vocab["<|endoftext|>"],
    )


def small_t5(vocab_size: int):  # type: ignore[no-untyped-def]
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=4096,  # T5-XXL's width: what the transformer's context embedder reads
            d_kv=8,
            d_ff=8,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
        )
    )


def sd3_vae():  # type: ignore[no-untyped-def]
    from diffusers import AutoencoderKL

    return AutoencoderKL(  # SD3's VAE geometry, which sd-scripts' SDVAE (and Flux's AE) fix
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        latent_channels=16,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
        force_upcast=False,
    )


def write_vae_ldm(vae, path: Path) -> None:  # type: ignore[no-untyped-def]
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    state = {k: v.detach() for k, v in vae.state_dict().items()}
    ldm = vae_to_ldm(state)
    same_tensors(convert_ldm_vae_checkpoint(dict(ldm), dict(vae.config)), state, "VAE")
    write_safetensors(path, ldm)


def build(out: Path) -> None:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    tmp = out.parent / (out.name + ".partial")
    vocab, tok_l, tok_g, tok_t5 = make_tokenizers(out)

    clip_l = CLIPTextModelWithProjection(clip_config(vocab, 768, 12, "quick_gelu"))
    clip_g = CLIPTextModelWithProjection(clip_config(vocab, 1280, 20, "gelu"))
    t5 = small_t5(len(tok_t5))
    for encoder in (clip_l, clip_g, t5):
        zero_layers(encoder)
    vae = sd3_vae()
    transformer = SD3Transformer2DModel(
        sample_size=8,  # the pipeline's default size: 8 latents = 64 px
        patch_size=2,
        in_channels=16,
        num_layers=DEPTH,
        attention_head_dim=64,
        num_attention_heads=DEPTH,
        joint_attention_dim=4096,
        caption_projection_dim=HIDDEN,
        pooled_projection_dim=2048,
        out_channels=16,
        pos_embed_max_size=POS_EMBED_MAX,
        qk_norm="rms_norm",  # SD3.5's qk-norm; no dual-attention layers: the SD3.5-large block type
    )
    round_to_bf16(clip_l, clip_g, t5, vae, transformer)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip_l,
        tokenizer=tok_l,
        text_encoder_2=clip_g,
        tokenizer_2=tok_g,
        text_encoder_3=t5,
        tokenizer_3=tok_t5,
    )
    pipe.save_pretrained(str(tmp), safe_serialization=True)

    kohya = tmp / "kohya"
    kohya.mkdir()
    raw = out.parent / (out.name + ".tokenizer")
    write_tokenizer_cache(kohya / "tokenizers", raw, {CLIP_L_TOKENIZER: tok_l, CLIP_G_TOKENIZER: tok_g}, tok_t5)
    state = {k: v.detach() for k, v in transformer.state_dict().items()}
    sai = mmdit_to_sai(state, DEPTH)
    same_tensors(convert_sd3_transformer_checkpoint_to_diffusers(dict(sai)), state, "MMDiT")
    # sd-scripts takes the MMDiT from keys under "model.diffusion_model." (as in SAI's own files)
    write_safetensors(kohya / "sd3.safetensors", {f"model.diffusion_model.{k}": v for k, v in sai.items()})
    clip_state = {k: v.detach() for k, v in clip_l.state_dict().items()}
    write_safetensors(kohya / "clip_l.safetensors", *full_clip(clip_state, 768, CLIP_L_FULL))
    clip_state = {k: v.detach() for k, v in clip_g.state_dict().items()}
    write_safetensors(kohya / "clip_g.safetensors", *full_clip(clip_state, 1280, CLIP_G_FULL))
    write_safetensors(kohya / "t5xxl.safetensors", *full_t5({k: v.detach() for k, v in t5.state_dict().items()}))
    write_vae_ldm(vae, kohya / "vae.safetensors")
    os.replace(tmp, out)  # a half-built model is never found under the final name
    print(f"tiny sd3 written to {out}", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve())
