"""Tiny, randomly initialised captioning models built locally (no hub): for tests, benchmarks and demos.

Each builder writes a folder that the real loading code reads exactly as it reads a downloaded checkpoint
(``save_pretrained`` output, or model.onnx + selected_tags.csv for WD14). Their captions are noise; their shapes,
tokenizers, processors and file layouts are the real ones. A few hundred KiB each, built in well under a second.
"""

from __future__ import annotations

import csv
from pathlib import Path

SEED = 0
WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "man",
    "woman",
    "person",
    "with",
    "in",
    "on",
    "and",
    "smiling",
    "red",
    "hat",
    "suit",
    "flag",
    "outdoors",
]


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2's table), in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def _byte_vocab(specials: list[str]) -> dict[str, int]:
    """Special tokens, then one token per byte: with no merges this is a complete byte-level BPE."""
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in _byte_alphabet():
        vocab.setdefault(ch, len(vocab))
    return vocab


def _bert_tokenizer(**kwargs):  # type: ignore[no-untyped-def]
    from transformers import BertTokenizer

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *WORDS]
    tokens += list("abcdefghijklmnopqrstuvwxyz0123456789.,'-") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    vocab: dict[str, int] = {}
    for tok in tokens:
        vocab.setdefault(tok, len(vocab))
    return BertTokenizer(vocab=vocab, do_lower_case=True, **kwargs)


def _small_vision(image_size: int = 32) -> dict:
    return dict(
        image_size=image_size,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=37,
    )


def build_blip(out: Path) -> Path:
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tok = _bert_tokenizer(bos_token="[DEC]")  # BLIP's decoder starts from [DEC]
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    text = dict(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        sep_token_id=tok.sep_token_id,
        eos_token_id=tok.sep_token_id,
    )
    config = BlipConfig(text_config=text, vision_config=_small_vision(), projection_dim=32)
    torch.manual_seed(SEED)
    BlipForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_blip2(out: Path) -> Path:
    import torch
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        GPT2Tokenizer,
    )

    tok = GPT2Tokenizer(
        vocab=_byte_vocab(["<pad>", "</s>", "<unk>"]),
        merges=[],
        bos_token="</s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    queries = 4
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok, num_query_tokens=queries
    )  # adds the <image> token to the tokenizer
    qformer = dict(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=37,
        encoder_hidden_size=32,
        max_position_embeddings=64,
    )
    text = dict(
        model_type="opt",
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        ffn_dim=37,
        word_embed_proj_dim=32,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    config = Blip2Config(
        vision_config=_small_vision(),
        qformer_config=qformer,
        text_config=text,
        num_query_tokens=queries,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(SEED)
    Blip2ForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_florence2(out: Path) -> Path:
    import torch
    from transformers import (
        BartTokenizer,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    tok = BartTokenizer(
        vocab=_byte_vocab(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>"]),
        merges=[],
        extra_special_tokens={"image_token": "<image>"},
    )
    size, stride = 32, 4
    image_tokens = (size // stride) ** 2 + 1  # one per patch, plus the pooled one
    image_processor = CLIPImageProcessor(
        size={"height": size, "width": size}, do_center_crop=False, image_seq_length=image_tokens
    )
    # The post-processor only needs its sections to exist; real checkpoints also add <loc_*> tokens for regions.
    sections = ["pure_text", "description_with_bboxes", "bboxes", "polygons"]
    sections += ["description_with_bboxes_or_polygons", "phrase_grounding", "ocr"]
    processor = Florence2Processor(
        image_processor=image_processor, tokenizer=tok, post_processor_config={s: {} for s in sections}
    )
    text = dict(
        model_type="bart",
        vocab_size=len(tok),
        max_position_embeddings=512,
        d_model=16,
        encoder_layers=1,
        encoder_ffn_dim=16,
        encoder_attention_heads=1,
        decoder_layers=1,
        decoder_ffn_dim=16,
        decoder_attention_heads=1,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        decoder_start_token_id=tok.eos_token_id,
    )
    vision = dict(
        depths=[1],
        patch_size=[7],
        patch_stride=[stride],
        patch_padding=[3],
        patch_prenorm=[False],
        embed_dim=[16],
        num_heads=[1],
        num_groups=[1],
        window_size=12,
        projection_dim=16,
    )
    config = Florence2Config(text_config=text, vision_config=vision, image_token_id=tok.image_token_id)
    torch.manual_seed(SEED)
    Florence2ForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


# A few tags of each WD14 category, in selected_tags.csv's layout: (name, category); 9 rating, 4 character, 0 general.
WD14_TAGS = [
    ("general", 9),
    ("sensitive", 9),
    ("questionable", 9),
    ("explicit", 9),
    ("1girl", 0),
    ("solo", 0),
    ("smile", 0),
    ("outdoors", 0),
    ("red_hat", 0),
    ("^_^", 0),
    ("astronaut_(character)", 4),
    ("hatsune_miku", 4),
]


def build_wd14(out: Path, size: int = 64, tags: list[tuple[str, int]] | None = None) -> Path:
    """An ONNX graph with the real tagger's interface: NHWC float32 BGR 0..255 in, one sigmoid per tag out."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    tags = tags or WD14_TAGS
    out.mkdir(parents=True, exist_ok=True)
    with (out / "selected_tags.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["tag_id", "name", "category", "count"])
        writer.writerows([i, name, cat, 1000 - i] for i, (name, cat) in enumerate(tags))
    rng = np.random.default_rng(SEED)
    init = [
        numpy_helper.from_array(np.array(1 / 255.0, np.float32), "scale"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
        numpy_helper.from_array(rng.standard_normal((3, len(tags))).astype(np.float32) * 4, "weight"),
        numpy_helper.from_array(rng.standard_normal(len(tags)).astype(np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("Mul", ["input_1:0", "scale"], ["unit"]),
        helper.make_node("ReduceMean", ["unit", "axes"], ["pooled"], keepdims=0),  # mean colour per image: [N, 3]
        helper.make_node("Gemm", ["pooled", "weight", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_wd14",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", len(tags)])],
        initializer=init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(out / "model.onnx"))
    return out


BUILDERS = {"florence2": build_florence2, "blip": build_blip, "blip2": build_blip2, "wd14": build_wd14}


def build(name: str, out: Path) -> Path:
    return BUILDERS[name](Path(out))


def build_clip_tokenizer(out: Path) -> Path:
    """A character-level CLIP tokenizer (real CLIP BPE format, no merges): for the token-window check."""
    from transformers import CLIPTokenizer

    vocab = _byte_vocab(["<|startoftext|>", "<|endoftext|>"])
    for ch in list(vocab)[2:]:
        vocab[ch + "</w>"] = len(vocab)  # CLIP marks a word's last piece with </w>
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(out)
    return out
