"""Build a tiny, randomly initialised Lumina Image 2.0 pipeline (diffusers folder), offline. Run in SimpleTuner's venv
(diffusers >= 0.33 has Lumina2Pipeline):

    python lumina2_script.py OUT_DIR

Never imported by the orchestrator. Same parts as Alpha-VLLM/Lumina-Image-2.0, scaled down: a Lumina2Transformer2DModel
(hidden 32, two layers, one refiner of each kind), a two-layer Gemma2Model whose width is the transformer's caption
width, a Gemma-style tokenizer made from the demo word list, a 16-channel 8x VAE (FLUX's latent shape) and the
flow-matching scheduler. SimpleTuner (model_family lumina2) trains it; diffusers renders a 64x64 image in seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdxl_script import WORDS  # noqa: E402  (a sibling script; this file runs outside the package)

# Gemma's special tokens keep their ids (pad 0, eos 1, bos 2, unk 3): Gemma2's config and both trainers assume them.
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
# The system prompts both trainers put before every caption (SimpleTuner's, and the one sd-scripts' docs recommend),
# ending in "<Prompt Start>": one token a word keeps them short.
SYSTEM_PROMPT_WORDS_TEXT = (
    "You are an assistant designed to generate superior images with the superior degree of image-text alignment "
    "based on textual prompts or user prompts. high-quality <Prompt Start>"
)


def write_gemma_tokenizer(folder: Path) -> int:
    """A Gemma-style tokenizer (tokenizer.json + tokenizer_config.json): a unigram vocabulary of the demo words and
    single characters, spaces as "\u2581", <bos> prepended. Loads through AutoTokenizer in transformers 4.x (sd-scripts)
    and 5.x alike. Its class is the generic PreTrainedTokenizerFast: transformers 5's GemmaTokenizer rebuilds its own BPE
    pipeline from the vocabulary (spelling every word letter by letter) instead of reading tokenizer.json. Returns
    the vocabulary size."""
    from tokenizers import Tokenizer, decoders, normalizers, processors
    from tokenizers.models import Unigram

    pieces = [(s, 0.0) for s in GEMMA_SPECIALS]
    pieces += [(f"\u2581{w}", -1.0) for w in dict.fromkeys([*WORDS, *SYSTEM_PROMPT_WORDS_TEXT.split()])]
    pieces += [(c, -5.0) for c in "\u2581abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;'!?-<>()"]
    tok = Tokenizer(Unigram(pieces, unk_id=GEMMA_SPECIALS.index("<unk>")))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)]
    )
    tok.add_special_tokens(GEMMA_SPECIALS)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "padding_side": "right",
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    special = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return tok.get_vocab_size()


def build(out: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel
    from transformers import Gemma2Config, Gemma2Model, PreTrainedTokenizerFast

    torch.manual_seed(0)
    raw = out.parent / (out.name + ".tokenizer")
    vocab_size = write_gemma_tokenizer(raw)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(raw))

    width = 32  # Gemma's hidden size is the transformer's caption feature width
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=vocab_size,
            hidden_size=width,
            intermediate_size=64,
            num_hidden_layers=2,  # the pipelines read hidden_states[-2]
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            query_pre_attn_scalar=16,
            max_position_embeddings=512,
            sliding_window=256,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
        )
    )
    # FLUX's AE shape (16 latent channels; 8x, which Lumina2Pipeline hardcodes) at tiny widths
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
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
    transformer = Lumina2Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        hidden_size=width,
        num_layers=2,
        num_refiner_layers=1,
        num_attention_heads=2,
        num_kv_heads=1,
        multiple_of=16,
        axes_dim_rope=(4, 6, 6),  # sums to the head dim (32 / 2)
        axes_lens=(300, 512, 512),
        cap_feat_dim=width,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=6.0)  # Lumina-Image-2.0's own
    pipe = Lumina2Pipeline(
        transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer
    )
    tmp = out.parent / (out.name + ".partial")
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    tmp.rename(out)  # a half-built model is never found under the final name
    print(f"tiny lumina2 written to {out}", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve())
