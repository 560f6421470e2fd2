"""Build a tiny, randomly initialised SD 1.5 pipeline (diffusers folder) that sd-scripts can train. Run it in the
kohya venv:

    python sd15_script.py OUT_DIR

sd-scripts copies the diffusers UNet into its own SD 1.5 UNet with a strict state-dict load, and that UNet's block
widths (320, 640, 1280, 1280) and two layers per block are fixed in its source: only the cross-attention width may
shrink. So the UNet keeps SD 1.5's geometry (~0.8 B parameters: 1.7 GB, stored in fp16, built once and cached) while
the text encoder and VAE are tiny. The tokenizer is the same hand-made byte-level BPE as the tiny SDXL's.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdxl_script import write_tokenizer  # noqa: E402  (a sibling script; this file runs outside the package)

CROSS_DIM = 32


def build(out: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    raw = out.parent / (out.name + ".tokenizer")
    vocab = write_tokenizer(raw)
    tokenizer = CLIPTokenizer.from_pretrained(str(raw), model_max_length=77)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=CROSS_DIM,  # equals the UNet's cross-attention width
            intermediate_size=CROSS_DIM * 2,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=CROSS_DIM,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    vae = AutoencoderKL(  # four blocks: SD's 8x spatial factor and 4 latent channels
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=CROSS_DIM,
        attention_head_dim=8,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    unet.to(torch.float16)  # half the disk; sd-scripts copies it into its own fp32 UNet (training runs as before)
    tmp = out.parent / (out.name + ".partial")
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    tmp.rename(out)  # a half-built model is never found under the final name
    print(f"tiny sd15 written to {out}", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve())
