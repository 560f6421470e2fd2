"""Build a tiny, randomly initialised SD 1.5 pipeline (diffusers folder) that sd-scripts can train. Run it in the
kohya venv:

    python sd15_script.py OUT_DIR

sd-scripts copies the diffusers UNet into its own SD 1.5 UNet with a strict state-dict load, and that UNet's block
widths (320, 640, 1280, 1280) and two layers per block are fixed in its source: only the cross-attention width may
shrink. So the UNet keeps SD 1.5's geometry (~0.8 B parameters, 1.7 GB in fp16) while the text encoder and VAE are
tiny. Its 1280-wide blocks, three quarters of its weights, are zero: written as holes in a sparse file, the model
takes ~0.26 GB of disk (a CI disk that holds both backends' environments has little more). The 320- and 640-wide
blocks keep random weights and reach the output through the skip connections, so a LoRA trains and changes the
image there. The tokenizer is the same hand-made byte-level BPE as the tiny SDXL's.
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdxl_script import write_tokenizer  # noqa: E402  (a sibling script; this file runs outside the package)

CROSS_DIM = 32
ZEROED = re.compile(r"(down_blocks\.[23]|mid_block|up_blocks\.[01])\.")  # the 1280-wide blocks


def write_sparse_fp16(path: Path, tensors: dict) -> None:
    """A safetensors file in fp16 whose zero runs (64 KiB at a time) are holes, never written: the disk it takes is
    what is not zero, at every moment of writing."""
    import torch

    names = sorted(tensors)
    header: dict = {}
    offset = 0
    for name in names:
        size = 2 * tensors[name].numel()
        header[name] = {"dtype": "F16", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name in names:
            data = tensors[name].detach().to(torch.float16).contiguous().view(torch.int16).numpy().tobytes()
            for at in range(0, len(data), 1 << 16):
                chunk = data[at : at + (1 << 16)]
                if chunk.count(0) == len(chunk):
                    f.seek(len(chunk), os.SEEK_CUR)
                else:
                    f.write(chunk)
        f.truncate(f.tell())  # the trailing holes, if any


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
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if ZEROED.match(name):
                param.zero_()
    tmp = out.parent / (out.name + ".partial")
    # every part as save_pretrained writes it, but the UNet's weights sparse (never written dense: the disk's peak
    # is the model's size); sd-scripts copies them into its own fp32 UNet
    pipe.save_config(str(tmp))
    parts = {"text_encoder": text_encoder, "tokenizer": tokenizer, "vae": vae, "scheduler": scheduler}
    for folder, part in parts.items():
        part.save_pretrained(str(tmp / folder))
    unet.save_config(str(tmp / "unet"))
    write_sparse_fp16(tmp / "unet" / "diffusion_pytorch_model.safetensors", unet.state_dict())
    tmp.rename(out)  # a half-built model is never found under the final name
    print(f"tiny sd15 written to {out}", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve())
