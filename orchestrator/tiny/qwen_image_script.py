"""Build a tiny, randomly initialised Qwen-Image pipeline (diffusers folder), offline. Run in SimpleTuner's venv
(diffusers >= 0.35 has QwenImagePipeline):

    python qwen_image_script.py OUT_DIR

Never imported by the orchestrator. Same parts as Qwen/Qwen-Image (SimpleTuner's model_flavour v1.0), scaled down: a
QwenImageTransformer2DModel (two blocks, hidden 32), a two-layer Qwen2.5-VL text encoder (with a one-block vision
tower: the class needs one, text prompts never reach it), a byte-level BPE tokenizer in Qwen's format, Qwen-Image's
causal 3D VAE at base width 16, and the flow-matching scheduler with dynamic shifting.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdxl_script import WORDS  # noqa: E402  (a sibling script; this file runs outside the package)

QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
]  # fmt: skip
# QwenImagePipeline drops the first 34 tokens of its prompt template (the system turn, as Qwen's own tokenizer splits
# it); with these words as single tokens the tiny tokenizer splits that turn into the same 34 tokens.
TEMPLATE_WORDS_TEXT = (
    "system user assistant Describe the image by detailing color shape size texture quantity text spatial "
    "relationships of objects and background"
)


def write_qwen_tokenizer(
    folder: Path,
    *,
    extra_words: list[str] = [],  # noqa: B006  (read only)
    specials: list[str] = QWEN_SPECIALS,  # noqa: B006  (read only)
    chat_template: str | None = None,
) -> int:
    """A byte-level BPE tokenizer in Qwen2's format (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json),
    trained on the demo and template words (each with and without a leading space) until every one of them is a
    single token; any other text falls back to bytes. Returns the vocabulary size (specials included)."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    words = list(dict.fromkeys([*WORDS, *TEMPLATE_WORDS_TEXT.split(), *extra_words]))
    trainer = BpeTrainer(  # trains until no pair is left: every corpus word ends up one token
        vocab_size=100_000, min_frequency=1, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([" ".join(words), *(f"{w} {w}" for w in words)], trainer=trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    model = json.loads(tok.to_str())["model"]
    vocab, merges = model["vocab"], [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 4096,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "add_prefix_space": False,
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return tok.get_vocab_size()


def qwen25vl_config(vocab_size: int, specials: dict[str, int], hidden: int):  # type: ignore[no-untyped-def]
    """A two-layer Qwen2.5-VL config of width ``hidden`` (head dim 16, M-RoPE sections summing to 8) with a one-block
    vision tower of width 16 that projects to ``hidden``."""
    from transformers import Qwen2_5_VLConfig

    text = {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": hidden // 16,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "rope_theta": 1000000.0,
        "tie_word_embeddings": False,
        "bos_token_id": specials["<|endoftext|>"],
        "eos_token_id": specials["<|im_end|>"],
        "pad_token_id": specials["<|endoftext|>"],
    }
    vision = {
        "depth": 1,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_heads": 2,
        "out_hidden_size": hidden,
        "fullatt_block_indexes": [0],
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=specials["<|image_pad|>"],
        video_token_id=specials["<|video_pad|>"],
        vision_start_token_id=specials["<|vision_start|>"],
        vision_end_token_id=specials["<|vision_end|>"],
        bos_token_id=specials["<|endoftext|>"],
        eos_token_id=specials["<|im_end|>"],
        pad_token_id=specials["<|endoftext|>"],
    )


def build(out: Path) -> None:
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer

    torch.manual_seed(0)
    raw = out.parent / (out.name + ".tokenizer")
    vocab_size = write_qwen_tokenizer(raw)
    tokenizer = Qwen2Tokenizer.from_pretrained(str(raw))
    specials = {s: tokenizer.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    width = 32  # the text encoder's hidden size is the transformer's joint attention width
    text_encoder = Qwen2_5_VLForConditionalGeneration(qwen25vl_config(vocab_size, specials, width))
    vae = AutoencoderKLQwenImage(  # Qwen-Image's causal 3D VAE (16 latent channels, 8x), base width 96 -> 16
        base_dim=16,
        z_dim=16,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
    )
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,  # 16 latent channels packed 2x2
        out_channels=16,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=width,
        axes_dims_rope=(4, 6, 6),  # sums to the head dim
    )
    scheduler = FlowMatchEulerDiscreteScheduler(  # Qwen-Image's own settings
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )
    pipe = QwenImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )
    template = pipe.prompt_template_encode
    dropped = tokenizer(template.split("{}")[0]).input_ids
    assert len(dropped) == pipe.prompt_template_encode_start_idx, f"system turn is {len(dropped)} tokens"
    tmp = out.parent / (out.name + ".partial")
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    tmp.rename(out)  # a half-built model is never found under the final name
    print(f"tiny qwen_image written to {out}", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve())
