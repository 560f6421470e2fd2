"""Build a tiny, randomly initialised FLUX.2-dev pipeline (diffusers folder), offline. Run in SimpleTuner's venv
(diffusers >= 0.36 has Flux2Pipeline):

    python flux2_script.py OUT_DIR

Never imported by the orchestrator. Same parts as black-forest-labs/FLUX.2-dev, scaled down: a Flux2Transformer2DModel
(one double and two single blocks, hidden 32, guidance embedding), a Mistral-3 text encoder of width 32 (thirty
layers: the pipelines stack hidden states 10, 20 and 30; a one-block Pixtral vision tower, which the class needs and
text prompts never reach), a Pixtral processor around a byte-level BPE tokenizer with Mistral's control tokens and
chat format, FLUX.2's 32-channel VAE (batch-norm statistics, 2x2 patches) at width 32, and the flow-matching
scheduler.

SimpleTuner 4.10.1 (model_flavour dev) loads Mistral-3 only from the hub id mistralai/Mistral-Small-3.1-24B-Instruct-2503
(no option names a local path), so the text encoder and processor are also laid out as that id in a hub cache at
OUT_DIR/hf-cache (relative links to the same files): point HF_HUB_CACHE there and SimpleTuner finds them offline.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qwen_image_script import write_qwen_tokenizer  # noqa: E402  (a sibling script; this file runs outside the package)

MISTRAL_ID = "mistralai/Mistral-Small-3.1-24B-Instruct-2503"
MISTRAL_SPECIALS = [
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]", "[IMG_BREAK]",
    "[IMG_END]",
]  # fmt: skip
# Mistral Small 3.1's chat format for system and user turns (messages carry lists of {"type": "text"} parts).
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set text = message['content'] if message['content'] is string else "
    "message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}"
    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif message['role'] == 'user' %}[INST]{{ text }}[/INST]"
    "{% else %}{{ text }}{{ eos_token }}{% endif %}{% endfor %}"
)
# FLUX.2's system message, as words: each becomes one token of the tiny tokenizer
SYSTEM_WORDS_TEXT = (
    "You are an AI that reasons about image descriptions give structured responses focusing on object "
    "relationships attribution and actions without speculation"
)
TEXT_WIDTH = 32
TEXT_LAYERS = 30  # FLUX.2-dev reads hidden states 10, 20 and 30 (Klein: 9, 18 and 27)


def flux2_parts(*, text_width: int, guidance: bool):  # type: ignore[no-untyped-def]
    """The transformer, VAE and scheduler shared by the dev and Klein builds: three stacked text layers make the
    transformer's context width."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=128,  # 32 latent channels packed 2x2 (VAE patch_size)
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * text_width,
        timestep_guidance_channels=256,
        mlp_ratio=3.0,
        axes_dims_rope=(4, 4, 4, 4),  # sums to the head dim
        guidance_embeds=guidance,
    )
    vae = AutoencoderKLFlux2(  # FLUX.2's VAE shape (32 latent channels, 8x, batch-norm over 2x2 patches), width 32
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=32,
        norm_num_groups=32,
        sample_size=64,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(  # FLUX.2's own settings
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return transformer, vae, scheduler


def save(pipe, out: Path) -> Path:  # type: ignore[no-untyped-def]
    tmp = out.parent / (out.name + ".partial")
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    return tmp


def hub_cache_entry(cache: Path, repo_id: str, sources: list[Path]) -> None:
    """Lay ``sources``' files out as ``repo_id`` in a hub cache (refs/main -> one snapshot of relative links), the
    way huggingface_hub resolves a hub id offline."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for source in sources:
        for file in sorted(source.iterdir()):
            link = snapshot / file.name
            if not link.exists():
                link.symlink_to(os.path.relpath(file, snapshot))


def build(out: Path) -> None:
    import torch
    from diffusers import Flux2Pipeline
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        PixtralImageProcessor,
        PixtralProcessor,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(0)
    raw = out.parent / (out.name + ".tokenizer")
    vocab_size = write_qwen_tokenizer(raw, extra_words=SYSTEM_WORDS_TEXT.split(), specials=MISTRAL_SPECIALS)
    config = json.loads((raw / "tokenizer_config.json").read_text())
    config |= {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>"}
    config |= {"pad_token": "<unk>", "unk_token": "<unk>"}  # Mistral pads with id 0
    (raw / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(raw))
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in MISTRAL_SPECIALS}
    processor = PixtralProcessor(
        image_processor=PixtralImageProcessor(patch_size=16, size={"longest_edge": 64}),
        tokenizer=tokenizer,
        patch_size=16,
        spatial_merge_size=2,
        chat_template=MISTRAL_CHAT_TEMPLATE,
    )
    text = {
        "model_type": "mistral",
        "vocab_size": vocab_size,
        "hidden_size": TEXT_WIDTH,
        "intermediate_size": 64,
        "num_hidden_layers": TEXT_LAYERS,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "max_position_embeddings": 4096,
        "sliding_window": None,
        "bos_token_id": ids["<s>"],
        "eos_token_id": ids["</s>"],
        "pad_token_id": ids["<unk>"],
    }
    vision = {
        "model_type": "pixtral",
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "head_dim": 8,
        "patch_size": 16,
        "image_size": 64,
    }
    text_encoder = Mistral3ForConditionalGeneration(
        Mistral3Config(
            text_config=text,
            vision_config=vision,
            image_token_index=ids["[IMG]"],
            spatial_merge_size=2,
            vision_feature_layer=-1,
        )
    )
    transformer, vae, scheduler = flux2_parts(text_width=TEXT_WIDTH, guidance=True)
    pipe = Flux2Pipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=processor, transformer=transformer
    )
    tmp = save(pipe, out)
    hub_cache_entry(tmp / "hf-cache", MISTRAL_ID, [tmp / "text_encoder", tmp / "tokenizer"])
    tmp.rename(out)  # a half-built model is never found under the final name
    print(f"tiny flux2 written to {out}", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve())
