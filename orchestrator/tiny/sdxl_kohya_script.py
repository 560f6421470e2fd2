"""Build a randomly initialised SDXL pipeline (diffusers folder) that sd-scripts can train. Run it in the kohya venv:

    python sdxl_kohya_script.py OUT_DIR

sd-scripts converts the diffusers UNet into its own SDXL UNet (library/sdxl_original_unet.py) whose geometry is fixed
in its source: channels 320/640/1280, transformer depths 1/2/10, context 2048, pooled + size embeddings 2816. So the
UNet keeps SDXL's full size (~2.57 B parameters, ~5.1 GB in fp16: built once and cached). The text encoders shrink
only in depth and MLP width: sd-scripts reads text encoder 1's hidden_states[11] (>= 11 layers), their widths 768 +
1280 must add up to the UNet's context 2048, and encoder 2's projection must give 1280. The VAE is tiny. Both
tokenizers are the hand-made byte-level BPE of the tiny SDXL (encoder 2's pads with "!", id 0, as bigG's does).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdxl_script import write_tokenizer  # noqa: E402  (a sibling script; this file runs outside the package)


def build(out: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    raw = out.parent / (out.name + ".tokenizer")
    vocab = write_tokenizer(raw)
    tokenizer = CLIPTokenizer.from_pretrained(str(raw), model_max_length=77)
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(raw), model_max_length=77, pad_token="!")

    def text_config(hidden: int, layers: int, heads: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=hidden,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=1280,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )

    vae = AutoencoderKL(  # four blocks: the same 8x spatial factor and 4 latent channels as the real SDXL VAE
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[32, 32, 32, 32],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=0.13025,
    )
    torch.set_default_dtype(torch.float16)  # the full-size UNet in fp16: half the RAM while building and on disk
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    torch.set_default_dtype(torch.float32)
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
        steps_offset=1,
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(text_config(768, 11, 12)),
        text_encoder_2=CLIPTextModelWithProjection(text_config(1280, 2, 20)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    tmp = out.parent / (out.name + ".partial")
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    tmp.rename(out)  # a half-built model is never found under the final name
    print(f"sd-scripts sdxl written to {out}", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve())
