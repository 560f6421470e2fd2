"""SD3 and Lumina 2 LoRAs between sd-scripts' layout and diffusers': exact round trips on the module sets the real
runs wrote (tests/fixtures/kohya/{sd3,lumina2}: 17 modules on the tiny SD3, 180 on Lumina 2's 2B geometry), the
weight change each module applies equal in both layouts, SimpleTuner's PEFT files fused and split back, clear errors.

The builders here (also used by test_lora_family.py and the integration tests) write LoRA files under each trainer's
module names with random weights, and compute the weight change per diffusers module from tables written out here,
not from the code under test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestrator.errors import LoraforgeError
from orchestrator.lora.convert import convert, make_scalar, scalar
from orchestrator.lora.safetensors_io import Tensor, read, write

R = 4
Shape = tuple[int | tuple[int, ...], int]  # (in features, or in x kh x kw for a conv; out features)


def encode(a: np.ndarray, dtype: str) -> Tensor:
    a = np.ascontiguousarray(a, dtype="<f4")
    if dtype == "BF16":
        return Tensor("BF16", list(a.shape), (a.view("<u4") >> 16).astype("<u2").tobytes())
    return Tensor(dtype, list(a.shape), a.astype({"F32": "<f4", "F16": "<f2"}[dtype]).tobytes())


def values(t: Tensor) -> np.ndarray:
    if t.dtype == "BF16":
        return (np.frombuffer(t.data, "<u2").astype("<u4") << 16).view("<f4").reshape(t.shape).astype(np.float64)
    return (
        np.frombuffer(t.data, {"F64": "<f8", "F32": "<f4", "F16": "<f2"}[t.dtype]).reshape(t.shape).astype(np.float64)
    )


def exact(tensors: dict[str, Tensor]) -> dict[str, tuple[str, list[int], bytes]]:
    return {k: (t.dtype, t.shape, t.data) for k, t in tensors.items()}


def _pair(n_in: int | tuple[int, ...], n_out: int, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if isinstance(n_in, tuple):  # a conv LoRA: down [r, in, kh, kw], up [out, r, 1, 1]
        return rng.standard_normal((rank, *n_in)) * 0.1, rng.standard_normal((n_out, rank, 1, 1)) * 0.1
    return rng.standard_normal((rank, n_in)) * 0.1, rng.standard_normal((n_out, rank)) * 0.1


def kohya_file(path: Path, modules: dict[str, Shape], metadata: dict[str, str] | None = None, *,
               dtype: str = "F32", alphas: dict[str, float] | None = None, scale: float = 1.0) -> Path:  # fmt: skip
    """sd-scripts' layout: one shared down per module, alpha 2 unless ``alphas`` says otherwise; ``scale`` multiplies
    the up weights (to move a tiny model's image clearly)."""
    tensors = {}
    for i, (module, (n_in, n_out)) in enumerate(sorted(modules.items())):
        down, up = _pair(n_in, n_out, R, seed=i)
        tensors[f"{module}.lora_down.weight"] = encode(down, dtype)
        tensors[f"{module}.lora_up.weight"] = encode(up * scale, dtype)
        tensors[f"{module}.alpha"] = make_scalar((alphas or {}).get(module, 2.0), dtype)
    return write(path, tensors, metadata or {})


def peft_file(path: Path, modules: dict[str, Shape], metadata: dict[str, str] | None = None, *,
              alphas: dict[str, float] | None = None, alpha: float = 4.0) -> Path:  # fmt: skip
    """diffusers / PEFT keys as SimpleTuner writes them (transformer.<module>.lora_A/B), each module its own A, with
    PEFT's config in lora_adapter_metadata (alpha, and per-module alphas by alpha_pattern)."""
    tensors = {}
    for i, (module, (n_in, n_out)) in enumerate(sorted(modules.items())):
        down, up = _pair(n_in, n_out, R, seed=100 + i)
        tensors[f"{module}.lora_A.weight"] = encode(down, "F32")
        tensors[f"{module}.lora_B.weight"] = encode(up, "F32")
    pattern = {k.partition(".")[2]: v for k, v in (alphas or {}).items()}
    peft = {"transformer.r": R, "transformer.lora_alpha": alpha, "transformer.alpha_pattern": pattern}
    return write(path, tensors, {"lora_adapter_metadata": json.dumps(peft), **(metadata or {})})


def kohya_deltas(
    path: Path, parts: dict[str, list[tuple[str, int]]], swapped: set[str], only: set[str] | None = None
) -> dict[str, np.ndarray]:
    """W delta per diffusers module as sd-scripts applies it, up @ down * alpha / rank on its Linear, cut by rows into
    the diffusers modules ``parts`` names (module -> [(diffusers module, rows)]); modules in ``swapped`` have their two
    halves of rows in the other order in diffusers. ``only``: these Kohya modules (a full-size delta is large)."""
    tensors, _ = read(path)
    out = {}
    for key in tensors:
        if not key.endswith(".lora_down.weight"):
            continue
        module = key[: -len(".lora_down.weight")]
        if only is not None and module not in only:
            continue
        down, up = values(tensors[key]), values(tensors[f"{module}.lora_up.weight"])
        delta = up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1) * scalar(tensors[f"{module}.alpha"])
        delta /= down.shape[0]
        if module in swapped:
            half = delta.shape[0] // 2
            delta = np.concatenate([delta[half:], delta[:half]])
        row = 0
        for target, rows in parts[module]:
            out[target] = delta[row : row + rows]
            row += rows
        assert row == delta.shape[0], module
    return out


def diffusers_deltas(path: Path, only: set[str] | None = None) -> dict[str, np.ndarray]:
    """W delta per diffusers module as diffusers applies it: B @ A * alpha / r, alpha from PEFT's metadata."""
    tensors, meta = read(path)
    peft = json.loads(meta.get("lora_adapter_metadata", "{}"))
    out = {}
    for key in tensors:
        if key.endswith(".lora_A.weight"):
            module = key[: -len(".lora_A.weight")]
            if only is not None and module not in only:
                continue
            root, _, sub = module.partition(".")
            a, b = values(tensors[key]), values(tensors[f"{module}.lora_B.weight"])
            alpha = peft.get(f"{root}.alpha_pattern", {}).get(sub, peft.get(f"{root}.lora_alpha", a.shape[0]))
            out[module] = b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1) * alpha / a.shape[0]
    return out


def assert_same_deltas(a: dict[str, np.ndarray], b: dict[str, np.ndarray], rtol: float = 1e-12) -> None:
    assert sorted(a) == sorted(b)
    for module in a:
        np.testing.assert_allclose(a[module], b[module], rtol=0, atol=rtol * np.abs(b[module]).max(), err_msg=module)


# --- SD3: networks.lora_sd3's modules (tests/fixtures/kohya/sd3: 17 on the tiny model's two blocks) ------------------
SD3_PARTS = {  # Kohya module suffix -> diffusers modules (rows: the block's width each)
    "x_block_attn_qkv": ["attn.to_q", "attn.to_k", "attn.to_v"],
    "x_block_attn_proj": ["attn.to_out.0"],
    "x_block_attn2_qkv": ["attn2.to_q", "attn2.to_k", "attn2.to_v"],
    "x_block_attn2_proj": ["attn2.to_out.0"],
    "x_block_mlp_fc1": ["ff.net.0.proj"],
    "x_block_mlp_fc2": ["ff.net.2"],
    "x_block_adaLN_modulation_1": ["norm1.linear"],
    "context_block_attn_qkv": ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
    "context_block_attn_proj": ["attn.to_add_out"],
    "context_block_mlp_fc1": ["ff_context.net.0.proj"],
    "context_block_mlp_fc2": ["ff_context.net.2"],
    "context_block_adaLN_modulation_1": ["norm1_context.linear"],
}
SD3_OUTSIDE = {"lora_unet_context_embedder": "context_embedder", "lora_unet_x_embedder_proj": "pos_embed.proj",
               "lora_unet_t_embedder_mlp_0": "time_text_embed.timestep_embedder.linear_1",
               "lora_unet_y_embedder_mlp_2": "time_text_embed.text_embedder.linear_2",
               "lora_unet_final_layer_adaLN_modulation_1": "norm_out.linear", "lora_unet_final_layer_linear": "proj_out"}  # fmt: skip


def sd3_modules(
    hidden: int = 128, depth: int = 2, dual: tuple[int, ...] = (), extras: bool = False
) -> dict[str, Shape]:
    """sd-scripts' SD3 LoRA modules: every joint block (the last one's context stream pre-only: qkv and a 2 x hidden
    modulation), MMDiT-X's attn2 in ``dual`` blocks; ``extras``: emb_dims' embedders and final layer, and the three
    text encoders."""
    h, out = hidden, {}
    for i in range(depth):
        b, last = f"lora_unet_joint_blocks_{i}_", i == depth - 1
        out |= {b + "x_block_attn_qkv": (h, 3 * h), b + "x_block_attn_proj": (h, h), b + "x_block_mlp_fc1": (h, 4 * h)}
        out |= {b + "x_block_mlp_fc2": (4 * h, h), b + "x_block_adaLN_modulation_1": (h, (9 if i in dual else 6) * h)}
        out |= {b + "context_block_attn_qkv": (h, 3 * h), b + "context_block_adaLN_modulation_1": (h, (2 if last else 6) * h)}  # fmt: skip
        if i in dual:
            out |= {b + "x_block_attn2_qkv": (h, 3 * h), b + "x_block_attn2_proj": (h, h)}
        if not last:
            out |= {b + "context_block_attn_proj": (h, h), b + "context_block_mlp_fc1": (h, 4 * h)}
            out |= {b + "context_block_mlp_fc2": (4 * h, h)}
    if extras:
        out |= {"lora_unet_context_embedder": (64, h), "lora_unet_x_embedder_proj": ((16, 2, 2), h)}
        out |= {"lora_unet_t_embedder_mlp_0": (256, h), "lora_unet_y_embedder_mlp_2": (h, h)}
        out |= {"lora_unet_final_layer_adaLN_modulation_1": (h, 2 * h), "lora_unet_final_layer_linear": (h, 64)}
        out |= {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (32, 32)}
        out |= {"lora_te2_text_model_encoder_layers_0_mlp_fc1": (48, 96)}
        out |= {"lora_te3_encoder_block_0_layer_1_DenseReluDense_wi_0": (32, 64)}
    return out


def sd3_parts(modules: dict[str, Shape]) -> tuple[dict[str, list[tuple[str, int]]], set[str]]:
    """Each Kohya module's diffusers parts with their rows, and the modules whose halves swap."""
    text = {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj": "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
            "lora_te2_text_model_encoder_layers_0_mlp_fc1": "text_encoder_2.text_model.encoder.layers.0.mlp.fc1",
            "lora_te3_encoder_block_0_layer_1_DenseReluDense_wi_0": "text_encoder_3.encoder.block.0.layer.1.DenseReluDense.wi_0"}  # fmt: skip
    parts, swapped = {}, {"lora_unet_final_layer_adaLN_modulation_1"}
    for module, (n_in, n_out) in modules.items():
        if module in text:
            parts[module] = [(text[module], n_out)]
        elif module in SD3_OUTSIDE:
            parts[module] = [(f"transformer.{SD3_OUTSIDE[module]}", n_out)]
        else:
            index, suffix = module[len("lora_unet_joint_blocks_") :].split("_", 1)
            targets = SD3_PARTS[suffix]
            parts[module] = [(f"transformer.transformer_blocks.{index}.{t}", n_out // len(targets)) for t in targets]
            if suffix == "context_block_adaLN_modulation_1" and n_out == 2 * n_in:
                swapped.add(module)
    return parts, swapped


# --- Lumina 2: networks.lora_lumina's modules (tests/fixtures/kohya/lumina2: 180 on the 2B model) ---------------------
LUMINA2_PARTS = {"attention_out": "attn.to_out.0", "feed_forward_w1": "feed_forward.linear_1",
                 "feed_forward_w2": "feed_forward.linear_2", "feed_forward_w3": "feed_forward.linear_3",
                 "adaLN_modulation_1": "norm1.linear"}  # fmt: skip
LUMINA2_2B = {"hidden": 2304, "heads": 24, "kv_heads": 8, "layers": 26, "refiners": 2, "ffn": 9216, "cond": 1024}
LUMINA2_TINY = {"hidden": 32, "heads": 2, "kv_heads": 1, "layers": 2, "refiners": 1, "ffn": 128, "cond": 32}


def lumina2_modules(g: dict[str, int]) -> dict[str, Shape]:
    """Every module lora_lumina trains by default on a model of geometry ``g``: qkv, out, w1-w3 and modulation of each
    layer and refiner (none for the context refiner), the final layer's linear and modulation."""
    h, head = g["hidden"], g["hidden"] // g["heads"]
    out: dict[str, Shape] = {}
    for block, count in (("layers", g["layers"]), ("noise_refiner", g["refiners"]), ("context_refiner", g["refiners"])):
        for i in range(count):
            b = f"lora_unet_{block}_{i}_"
            out |= {b + "attention_qkv": (h, h + 2 * g["kv_heads"] * head), b + "attention_out": (h, h)}
            out |= {b + "feed_forward_w1": (h, g["ffn"]), b + "feed_forward_w2": (g["ffn"], h)}
            out |= {b + "feed_forward_w3": (h, g["ffn"])}
            if block != "context_refiner":
                out[b + "adaLN_modulation_1"] = (g["cond"], 4 * h)
    out |= {"lora_unet_final_layer_linear": (h, 64), "lora_unet_final_layer_adaLN_modulation_1": (g["cond"], h)}
    return out


def lumina2_parts(modules: dict[str, Shape], g: dict[str, int]) -> dict[str, list[tuple[str, int]]]:
    q, kv = g["hidden"], g["kv_heads"] * (g["hidden"] // g["heads"])
    final = {"lora_unet_final_layer_linear": "norm_out.linear_2",
             "lora_unet_final_layer_adaLN_modulation_1": "norm_out.linear_1"}  # fmt: skip
    parts = {}
    for module, (_, n_out) in modules.items():
        if module in final:
            parts[module] = [(f"transformer.{final[module]}", n_out)]
            continue
        stem = module[len("lora_unet_") :]
        for kind in ("attention_qkv", *LUMINA2_PARTS):
            if stem.endswith("_" + kind):
                at = "transformer." + stem[: -len(kind) - 1].replace("_refiner_", "_refiner.").replace(
                    "layers_", "layers."
                )
                if kind == "attention_qkv":
                    parts[module] = [(f"{at}.attn.to_q", q), (f"{at}.attn.to_k", kv), (f"{at}.attn.to_v", kv)]
                else:
                    parts[module] = [(f"{at}.{LUMINA2_PARTS[kind]}", n_out)]
    return parts


# --- the tests ---------------------------------------------------------------------------------------------------------
SD_SCRIPTS_SD3 = {"ss_network_module": "networks.lora_sd3", "ss_base_model_version": "5-large",
                  "modelspec.architecture": "stable-diffusion-3-5-large/lora"}  # fmt: skip
SD_SCRIPTS_LUMINA2 = {"ss_network_module": "networks.lora_lumina", "ss_base_model_version": "lumina2",
                      "modelspec.architecture": "lumina-2/lora"}  # fmt: skip


def round_trip(source: Path, tmp: Path) -> tuple[Path, Path]:
    diffusers = convert(source, tmp / "diffusers.safetensors", "diffusers")
    return diffusers, convert(diffusers, tmp / "back.safetensors", "kohya")


def test_sd3_kohya_lora_of_the_fixture_run_round_trips_exactly(tmp_path: Path) -> None:
    modules = sd3_modules()  # the tiny SD3's two blocks, as sd-scripts trained them
    assert len(modules) == 17
    source = kohya_file(tmp_path / "k.safetensors", modules, SD_SCRIPTS_SD3)
    diffusers, back = round_trip(source, tmp_path)
    (k1, m1), (d, md), (k2, m2) = read(source), read(diffusers), read(back)
    assert exact(k2) == exact(k1)
    assert {k: v for k, v in m2.items() if k != "loraforge_format"} == m1
    assert len({k.rsplit(".lora_", 1)[0] for k in d}) == 25  # 4 qkv modules became 12
    # the same down for q, k and v; alpha unchanged (2 for rank 4): diffusers reads it from PEFT's metadata
    stem = "transformer.transformer_blocks.1.attn"
    assert {d[f"{stem}.{p}.lora_A.weight"].data for p in ("add_q_proj", "add_k_proj", "add_v_proj")} == {
        k1["lora_unet_joint_blocks_1_context_block_attn_qkv.lora_down.weight"].data
    }
    peft = json.loads(md["lora_adapter_metadata"])
    assert (peft["transformer.r"], peft["transformer.lora_alpha"], peft["transformer.alpha_pattern"]) == (R, 2.0, {})
    assert_same_deltas(kohya_deltas(source, *sd3_parts(modules)), diffusers_deltas(diffusers))


def test_sd3_medium_blocks_embedders_and_text_encoders_round_trip_exactly(tmp_path: Path) -> None:
    """MMDiT-X's attn2 and 9-part modulation, emb_dims' embedders (x_embedder a conv) and final layer (rows swapped),
    CLIP-L, CLIP-G and T5 modules; bf16 as sd-scripts saves with save_precision bf16."""
    modules = sd3_modules(hidden=64, depth=3, dual=(0, 1), extras=True)
    source = kohya_file(tmp_path / "k.safetensors", modules, {}, dtype="BF16")
    diffusers, back = round_trip(source, tmp_path)
    assert exact(read(back)[0]) == exact(read(source)[0])
    d, _ = read(diffusers)
    assert d["transformer.pos_embed.proj.lora_A.weight"].shape == [R, 16, 2, 2]
    assert "text_encoder_3.encoder.block.0.layer.1.DenseReluDense.wi_0.lora_B.weight" in d
    assert_same_deltas(kohya_deltas(source, *sd3_parts(modules)), diffusers_deltas(diffusers))


def test_a_simpletuner_sd3_lora_fuses_block_diagonally_and_splits_back(tmp_path: Path) -> None:
    """SimpleTuner's default targets (to_q, to_k, to_v, to_out.0), each with its own A; the context modulation of
    the last block too (diffusers' scale, shift order); one part with its own alpha (x 2: exact in binary)."""
    h = 128
    modules = {f"transformer.transformer_blocks.{i}.attn.{p}": (h, h) for i in range(2)
               for p in ("to_q", "to_k", "to_v", "to_out.0")}  # fmt: skip
    modules["transformer.transformer_blocks.1.norm1_context.linear"] = (h, 2 * h)
    alphas = {"transformer.transformer_blocks.0.attn.to_k": 8.0}
    source = peft_file(tmp_path / "d.safetensors", modules, {"modelspec.architecture": "sd3/lora"}, alphas=alphas)
    kohya = convert(source, tmp_path / "k.safetensors", "kohya")
    back = convert(kohya, tmp_path / "d2.safetensors", "diffusers")
    k, _ = read(kohya)
    assert k["lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight"].shape == [3 * R, h]
    assert scalar(k["lora_unet_joint_blocks_0_x_block_attn_qkv.alpha"]) == 8.0 * 3  # the largest scale, 8/4
    assert exact(read(back)[0]) == exact(read(source)[0])
    peft = json.loads(read(back)[1]["lora_adapter_metadata"])
    assert peft["transformer.alpha_pattern"] == {"transformer_blocks.0.attn.to_k": 8.0}
    parts = {f"lora_unet_joint_blocks_{i}_x_block_attn_qkv": [(f"transformer.transformer_blocks.{i}.attn.{p}", h)
             for p in ("to_q", "to_k", "to_v")] for i in range(2)}  # fmt: skip
    parts |= {f"lora_unet_joint_blocks_{i}_x_block_attn_proj": [(f"transformer.transformer_blocks.{i}.attn.to_out.0", h)]
              for i in range(2)}  # fmt: skip
    parts["lora_unet_joint_blocks_1_context_block_adaLN_modulation_1"] = [
        ("transformer.transformer_blocks.1.norm1_context.linear", 2 * h)
    ]
    swapped = {"lora_unet_joint_blocks_1_context_block_adaLN_modulation_1"}
    assert_same_deltas(kohya_deltas(kohya, parts, swapped), diffusers_deltas(source))


@pytest.mark.parametrize("geometry", [LUMINA2_2B, LUMINA2_TINY], ids=["2B", "tiny"])
def test_lumina2_kohya_lora_of_the_fixture_run_round_trips_exactly(tmp_path: Path, geometry: dict[str, int]) -> None:
    """The 2B model's 180 modules in bf16, as the fixture run wrote them (q/k/v rows 2304 / 768 / 768, the sizes
    diffusers hard-codes), and the tiny model's (32 / 16 / 16): the split sizes come from each file's tensors."""
    modules = lumina2_modules(geometry)
    if geometry is LUMINA2_2B:
        assert len(modules) == 180
    source = kohya_file(tmp_path / "k.safetensors", modules, SD_SCRIPTS_LUMINA2, dtype="BF16")
    diffusers, back = round_trip(source, tmp_path)
    assert exact(read(back)[0]) == exact(read(source)[0])
    d, _ = read(diffusers)
    kv = geometry["kv_heads"] * geometry["hidden"] // geometry["heads"]
    shapes = [d[f"transformer.layers.1.attn.{p}.lora_B.weight"].shape for p in ("to_q", "to_k", "to_v")]
    assert shapes == [[geometry["hidden"], R], [kv, R], [kv, R]]
    assert "transformer.context_refiner.0.norm1.linear.lora_A.weight" not in d
    parts = lumina2_parts(modules, geometry)
    picked = {"lora_unet_layers_1_attention_qkv", "lora_unet_noise_refiner_0_adaLN_modulation_1"}
    picked |= {"lora_unet_context_refiner_1_attention_qkv", "lora_unet_final_layer_adaLN_modulation_1"}
    expected = kohya_deltas(source, parts, set(), picked)  # a few modules: the 2B model's deltas are 100 MB each
    assert_same_deltas(expected, diffusers_deltas(diffusers, set(expected)))


def test_a_simpletuner_lumina2_lora_fuses_with_kv_widths_from_its_tensors_and_splits_back(tmp_path: Path) -> None:
    g = LUMINA2_TINY
    modules = {f"transformer.{b}.{p}": s for b in ("layers.0", "layers.1", "noise_refiner.0", "context_refiner.0")
               for p, s in (("attn.to_q", (32, 32)), ("attn.to_k", (32, 16)), ("attn.to_v", (32, 16)),
                            ("attn.to_out.0", (32, 32)))}  # fmt: skip
    source = peft_file(tmp_path / "d.safetensors", modules, {"modelspec.architecture": "lumina2/lora"})
    kohya = convert(source, tmp_path / "k.safetensors", "kohya")
    k, _ = read(kohya)
    assert k["lora_unet_noise_refiner_0_attention_qkv.lora_up.weight"].shape == [64, 3 * R]
    assert exact(read(convert(kohya, tmp_path / "d2.safetensors", "diffusers"))[0]) == exact(read(source)[0])
    parts = {m: p for m, p in lumina2_parts(lumina2_modules(g), g).items() if "attention" in m and "layers_2" not in m}
    assert_same_deltas(kohya_deltas(kohya, parts, set()), diffusers_deltas(source))


def test_lumina2_without_k_or_v_cannot_be_fused_and_says_why(tmp_path: Path) -> None:
    source = peft_file(tmp_path / "d.safetensors", {"transformer.layers.0.attn.to_q": (32, 32)}, {})
    with pytest.raises(LoraforgeError, match="neither k nor v is trained"):
        convert(source, tmp_path / "k.safetensors", "kohya")
    assert not (tmp_path / "k.safetensors").exists()


@pytest.mark.parametrize(
    "module, shape, message",
    [
        ("lora_unet_joint_blocks_0_x_block_attn_qkv", (16, 47), "do not split into q, k and v"),
        ("lora_unet_layers_0_attention_qkv", (32, 33), "two equal k, v parts"),
        ("lora_unet_joint_blocks_0_x_block_attn_norm", (16, 16), "not an SD3 module"),
    ],
)
def test_malformed_sd3_and_lumina2_loras_give_a_clear_error(
    tmp_path: Path, module: str, shape: tuple[int, int], message: str
) -> None:
    source = kohya_file(tmp_path / "k.safetensors", {module: shape})
    with pytest.raises(LoraforgeError, match=message):
        convert(source, tmp_path / "d.safetensors", "diffusers")
    assert not (tmp_path / "d.safetensors").exists()
