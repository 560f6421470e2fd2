"""Build a tiny, randomly initialised Flux pipeline (diffusers folder), offline. Run in a backend venv:

    python flux_script.py OUT_DIR

Never imported by the orchestrator (it needs torch, diffusers and transformers). Same parts as FLUX.1-dev, scaled
down: a FluxTransformer2DModel with two double and two single blocks (hidden 32, guidance embedding), a CLIP-L
stand-in (sdxl_script's hand-made byte-level BPE tokenizer), a T5 encoder with a small unigram tokenizer made from a
word list, an 8x VAE and the flow-matching scheduler. Loads and renders a 64x64 image in seconds on CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sdxl_script import WORDS, write_tokenizer

HIDDEN = 32  # heads * head dim; also the T5 width and the CLIP pooled width the transformer conditions on


def t5_vocab() -> list[tuple[str, float]]:
    """A unigram vocabulary: the specials T5 expects first, each demo word as one piece, then single characters so
    any other text still tokenises."""
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    words = [(f"\u2581{w}", -1.0) for w in WORDS]
    chars = [(c, -5.0) for c in "\u2581abcdefghijklmnopqrstuvwxyz0123456789.,'-"]
    return specials + words + chars


def build(out: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

    torch.manual_seed(0)
    raw = out.parent / (out.name + ".tokenizer")
    vocab = write_tokenizer(raw)
    tokenizer = CLIPTokenizer.from_pretrained(str(raw), model_max_length=77)
    tokenizer_2 = T5Tokenizer(vocab=t5_vocab(), extra_ids=0, model_max_length=64)

    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=HIDDEN,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    t5 = T5EncoderModel(  # gated-gelu like T5 v1.1 / FLUX's T5-XXL: DenseReluDense.wi_0 / wi_1 / wo
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=HIDDEN,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
        )
    )
    vae = AutoencoderKL(  # four blocks: the same 8x spatial factor as FLUX's VAE (which has 16 latent channels)
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[32, 32, 32, 32],
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
        force_upcast=False,
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * 4,  # the pipeline packs 2x2 latent patches into one token
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=HIDDEN,
        pooled_projection_dim=HIDDEN,
        guidance_embeds=True,  # as FLUX.1-dev: guidance_in is one of the modules a LoRA may train
        axes_dims_rope=(4, 6, 6),  # sums to the head dim
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    tmp = out.parent / (out.name + ".partial")
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    tmp.rename(out)  # a half-built model is never found under the final name
    print(f"tiny flux written to {out}", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve())
