"""Build a randomly initialised Lumina Image 2.0 that sd-scripts' lumina_train_network.py trains, and the same weights
as a diffusers folder that SimpleTuner and diffusers load, offline. Run it in SimpleTuner's venv (diffusers >= 0.33):

    python lumina2_kohya_script.py OUT_DIR

Never imported by the orchestrator. sd-scripts (48d368fa) builds every part from a config fixed in its source and
loads the files into it: the Next-DiT from LuminaParams.get_2b_config() (hidden 2304, 26 layers, 2+2 refiners:
2.61 B parameters), Gemma 2 from the full gemma-2-2b config in library/lumina_util.py (2.61 B, 256000-token
embedding) and the AE from FLUX's ae_params (84 M). It loads with strict=False onto meta tensors, so a smaller file
leaves meta tensors behind and fails later; every part therefore keeps its full size, in bf16 (~10.6 GB on disk; the
diffusers transformer is a second copy of the Next-DiT's weights under diffusers' names, the text encoder a hard
link to the same file). Only the tokenizer is tiny: a Gemma-style one from lumina2_script, which sd-scripts finds as
google/gemma-2-2b in a hub cache (pass OUT_DIR/kohya/tokenizer_cache as --tokenizer_cache_dir: it is used as
cache_dir, not as a folder of tokenizers).

OUT_DIR/kohya/: lumina2.safetensors (Alpha-VLLM keys, as sd-scripts' NextDiT), gemma2.safetensors (Gemma2Model keys),
ae.safetensors (FLUX AE / LDM keys), tokenizer_cache/. OUT_DIR/ itself is a Lumina2Pipeline folder.

The big tensors are drawn and written one at a time (building peaks at ~3 GB of RAM, ~4 min on 2 cores); each tensor
is drawn from its own seed (its name), so the two layouts hold the very same numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lumina2_script import write_gemma_tokenizer  # noqa: E402  (a sibling script; this file runs outside the package)

# sd-scripts' LuminaParams.get_2b_config(), in diffusers' names (Lumina2Transformer2DModel's defaults)
DIT = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "hidden_size": 2304, "num_layers": 26,
    "num_refiner_layers": 2, "num_attention_heads": 24, "num_kv_heads": 8, "multiple_of": 256,
    "ffn_dim_multiplier": None, "norm_eps": 1e-5, "scaling_factor": 1.0, "axes_dim_rope": [32, 32, 32],
    "axes_lens": [300, 512, 512], "cap_feat_dim": 2304,
}  # fmt: skip
# sd-scripts' GEMMA2_CONFIG (library/lumina_util.py load_gemma2), the full gemma-2-2b
GEMMA2 = {
    "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "attention_bias": False,
    "attention_dropout": 0.0, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
    "query_pre_attn_scalar": 256, "sliding_window": 4096, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
}  # fmt: skip
GEMMA_ID = "google/gemma-2-2b"  # strategy_lumina.GEMMA_ID: the only name sd-scripts asks AutoTokenizer for
CHUNK = 1 << 24  # elements drawn at a time


def draw(name: str, shape: tuple[int, ...], kind: str):  # type: ignore[no-untyped-def]
    """One tensor, the same for the same name: 'normal' N(0, 0.02) in row chunks, 'ones', 'zeros'. bf16."""
    import torch

    if kind != "normal":
        return (torch.ones if kind == "ones" else torch.zeros)(shape, dtype=torch.bfloat16)
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") >> 1
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty(shape, dtype=torch.bfloat16)
    flat = out.view(-1)
    for start in range(0, flat.numel(), CHUNK):
        stop = min(start + CHUNK, flat.numel())
        flat[start:stop] = torch.randn(stop - start, generator=generator) * 0.02
    return out


def stream_safetensors(
    path: Path, entries: list[tuple[str, tuple[int, ...], Callable[[], object]]], metadata: dict[str, str]
) -> None:
    """Write a bf16 safetensors file whose tensors are made one at a time by ``entries``' callables (in order)."""
    import torch

    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, shape, _ in entries:
        size = 2
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, make in entries:
            tensor = make()
            assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == shape, name
            f.write(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    tmp.rename(path)


def dit_kind(name: str, shape: tuple[int, ...]) -> str:
    """Linear weights random, biases zero, RMSNorm scales one (Lumina multiplies by the scale)."""
    if len(shape) > 1:
        return "normal"
    return "ones" if "norm" in name else "zeros"


def diffusers_to_sd_scripts(key: str) -> str:
    """A Lumina2Transformer2DModel key as sd-scripts' NextDiT names it (to_q/to_k/to_v go to one qkv; see
    build_dit). The inverse of diffusers' convert_lumina2_to_diffusers, which build_dit checks it against."""
    rules = [
        ("time_caption_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
        ("time_caption_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
        ("time_caption_embed.caption_embedder", "cap_embedder"),
        ("norm_out.linear_1", "final_layer.adaLN_modulation.1"),
        ("norm_out.linear_2", "final_layer.linear"),
        (".attn.to_out.0.", ".attention.out."),
        (".attn.norm_q.", ".attention.q_norm."),
        (".attn.norm_k.", ".attention.k_norm."),
        (".feed_forward.linear_", ".feed_forward.w"),
        (".norm1.linear.", ".adaLN_modulation.1."),
        (".norm1.norm.", ".attention_norm1."),
        (".norm1.", ".attention_norm1."),  # the context refiner has no modulation: a bare norm1
        (".norm2.", ".attention_norm2."),
    ]
    for old, new in rules:
        if old in key:
            return key.replace(old, new)
    return key


def build_dit(out: Path, kohya: Path) -> None:
    import torch
    from diffusers import Lumina2Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_lumina2_to_diffusers

    with torch.device("meta"):
        model = Lumina2Transformer2DModel(**DIT)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    def make(name: str) -> Callable[[], object]:
        return lambda: draw(name, shapes[name], dit_kind(name, shapes[name]))

    sd_entries: list[tuple[str, tuple[int, ...], Callable[[], object]]] = []
    for key, shape in shapes.items():
        if ".attn.to_k." in key or ".attn.to_v." in key:
            continue
        if ".attn.to_q." in key:
            parts = [key, key.replace("to_q", "to_k"), key.replace("to_q", "to_v")]
            rows = sum(shapes[p][0] for p in parts)
            target = key.replace(".attn.to_q.", ".attention.qkv.")
            sd_entries.append((target, (rows, shape[1]), lambda parts=parts: torch.cat([make(p)() for p in parts])))
        else:
            sd_entries.append((diffusers_to_sd_scripts(key), shape, make(key)))
    # NextDiT's norm_final exists in sd-scripts' model (unused by its forward) and must be in the file: a missing
    # key stays a meta tensor there. diffusers drops it.
    sd_entries.append(("norm_final.weight", (DIT["hidden_size"],), lambda: draw("", (DIT["hidden_size"],), "ones")))

    # the mapping is diffusers' own reading of such a file, checked on meta tensors (shapes only)
    with torch.device("meta"):
        converted = convert_lumina2_to_diffusers({n: torch.empty(s) for n, s, _ in sd_entries})
    assert {k: tuple(v.shape) for k, v in converted.items()} == shapes, "Lumina 2 key mapping disagrees with diffusers"

    stream_safetensors(kohya / "lumina2.safetensors", sd_entries, {"format": "pt"})
    (out / "transformer").mkdir()
    stream_safetensors(
        out / "transformer" / "diffusion_pytorch_model.safetensors",
        [(k, s, make(k)) for k, s in shapes.items()],
        {"format": "pt"},
    )
    model.save_config(str(out / "transformer"))


def build_gemma2(out: Path, kohya: Path) -> None:
    import torch
    from transformers import Gemma2Config, Gemma2Model

    config = Gemma2Config(**GEMMA2)
    with torch.device("meta"):
        model = Gemma2Model(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    def kind(name: str) -> str:  # Gemma's RMSNorm scales by (1 + weight): zero is the identity
        return "zeros" if "norm" in name else "normal"

    entries = [(k, s, lambda k=k, s=s: draw("gemma2." + k, s, kind(k))) for k, s in shapes.items()]
    stream_safetensors(kohya / "gemma2.safetensors", entries, {"format": "pt"})
    (out / "text_encoder").mkdir()
    os.link(kohya / "gemma2.safetensors", out / "text_encoder" / "model.safetensors")  # one file, two names
    config.torch_dtype = "bfloat16"
    config.architectures = ["Gemma2Model"]
    config.save_pretrained(str(out / "text_encoder"))


def vae_to_ldm(key: str, blocks: int) -> str:
    """An AutoencoderKL key in the LDM / FLUX AE naming sd-scripts' flux_models.AutoEncoder uses."""
    import re

    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    key = re.sub(r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block.", key)
    key = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", key)
    key = re.sub(r"up_blocks\.(\d+)\.resnets\.", lambda m: f"up.{blocks - 1 - int(m[1])}.block.", key)
    key = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"up.{blocks - 1 - int(m[1])}.upsample.", key)
    key = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", key)
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for old, new in attention.items():
        key = key.replace(f"mid_block.attentions.0.{old}.", f"mid.attn_1.{new}.")
    return key


def build_vae(out: Path, kohya: Path) -> None:
    import torch
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import save_file

    torch.manual_seed(0)
    vae = AutoencoderKL(  # FLUX's AE (sd-scripts: flux_models.configs["schnell"].ae_params), full size
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        norm_num_groups=32,
        sample_size=1024,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
        force_upcast=True,
    ).to(torch.bfloat16)
    state = vae.state_dict()
    blocks = len(vae.config.block_out_channels)
    ldm = {}
    for key, tensor in state.items():
        name = vae_to_ldm(key, blocks)
        # LDM's attention projections are 1x1 convolutions
        ldm[name] = tensor[:, :, None, None] if ".mid.attn_1." in name and tensor.dim() == 2 else tensor
    back = convert_ldm_vae_checkpoint(dict(ldm), dict(vae.config))
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state), "AE mapping"
    save_file({k: v.contiguous() for k, v in ldm.items()}, str(kohya / "ae.safetensors"), {"format": "pt"})
    vae.save_pretrained(str(out / "vae"), safe_serialization=True)


def build(out: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    tmp = out.parent / (out.name + ".partial")
    kohya = tmp / "kohya"
    kohya.mkdir(parents=True)
    write_gemma_tokenizer(tmp / "tokenizer")
    # sd-scripts asks AutoTokenizer for google/gemma-2-2b with cache_dir=--tokenizer_cache_dir: a hub cache entry
    snapshot = kohya / "tokenizer_cache" / ("models--" + GEMMA_ID.replace("/", "--"))
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("0" * 40)
    (snapshot / "snapshots" / ("0" * 40)).mkdir(parents=True)
    for file in (tmp / "tokenizer").iterdir():
        link = snapshot / "snapshots" / ("0" * 40) / file.name
        link.symlink_to(os.path.relpath(file, link.parent))
    build_vae(tmp, kohya)
    build_dit(tmp, kohya)
    build_gemma2(tmp, kohya)
    FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=6.0).save_pretrained(str(tmp / "scheduler"))
    index = {
        "_class_name": "Lumina2Pipeline",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Gemma2Model"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "transformer": ["diffusers", "Lumina2Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    tmp.rename(out)  # a half-built model is never found under the final name
    print(f"lumina2 (sd-scripts' full geometry) written to {out}", flush=True)


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve())
