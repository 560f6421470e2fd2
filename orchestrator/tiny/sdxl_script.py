"""Build a tiny, randomly initialised SDXL pipeline (diffusers folder), offline. Run in a backend venv:

    python sdxl_script.py OUT_DIR

Never imported by the orchestrator (it needs torch, diffusers and transformers). Two small CLIP text encoders share
one hand-made byte-level BPE tokenizer whose merges turn the demo caption words into single tokens.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

WORDS = [
    "ohwx", "person", "photo", "of", "a", "an", "the", "red", "green", "blue", "yellow", "circle", "square",
    "triangle", "on", "light", "dark", "background", "toy", "style",
]  # fmt: skip


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes that byte-level BPE tokenizers (CLIP, GPT-2) use."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]


def write_tokenizer(folder: Path) -> dict[str, int]:
    base = byte_symbols()
    tokens = base + [s + "</w>" for s in base]
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            if pair not in merges:
                merges.append(pair)
            parts = [pair[0] + pair[1], *parts[2:]]
            tokens.append(parts[0])
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vocab


def build(out: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    raw = out.parent / (out.name + ".tokenizer")
    vocab = write_tokenizer(raw)
    tokenizer = CLIPTokenizer.from_pretrained(str(raw), model_max_length=77)

    def text_config() -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )

    vae = AutoencoderKL(  # four blocks: the same 8x spatial factor as the real SDXL VAE
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[32, 32, 32, 32],
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=128,
        scaling_factor=0.13025,
        force_upcast=False,
    )
    unet = UNet2DConditionModel(  # SDXL conditioning: text_time added embeddings, two encoders concatenated
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 1),
        cross_attention_dim=64,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
        norm_num_groups=32,
    )
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
        text_encoder=CLIPTextModel(text_config()),
        text_encoder_2=CLIPTextModelWithProjection(text_config()),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    tmp = out.parent / (out.name + ".partial")
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    tmp.rename(out)  # a half-built model is never found under the final name
    print(f"tiny sdxl written to {out}", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve())
