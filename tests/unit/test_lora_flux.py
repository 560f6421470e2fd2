"""Flux LoRAs between sd-scripts' layout (BFL names, fused qkv / linear1) and diffusers': exact both ways, the applied
delta W = up @ down * alpha / rank equal per diffusers module, clear errors for what is not a Flux LoRA.

Small random tensors under the real Flux key names: hidden width 8, MLP width 32 (FLUX.1's ratio 4), rank 4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestrator.cli import main
from orchestrator.errors import LoraforgeError
from orchestrator.lora import keys as K
from orchestrator.lora.convert import convert, make_scalar, scalar
from orchestrator.lora.inspect import describe
from orchestrator.lora.safetensors_io import Tensor, read, write

H, M, R = 8, 32, 4  # hidden width, MLP width, rank
DOUBLE_OUT = {  # BFL double-block module -> (in, out)
    "img_attn_qkv": (H, 3 * H), "img_attn_proj": (H, H), "img_mlp_0": (H, M), "img_mlp_2": (M, H),
    "img_mod_lin": (H, 6 * H), "txt_attn_qkv": (H, 3 * H), "txt_attn_proj": (H, H), "txt_mlp_0": (H, M),
    "txt_mlp_2": (M, H), "txt_mod_lin": (H, 6 * H),
}  # fmt: skip
SINGLE_OUT = {"linear1": (H, 3 * H + M), "linear2": (H + M, H), "modulation_lin": (H, 3 * H)}
# Rows of each diffusers part inside its Kohya module, written out here rather than taken from the code under test.
PARTS = {
    "img_attn_qkv": [("attn.to_q", H), ("attn.to_k", H), ("attn.to_v", H)],
    "txt_attn_qkv": [("attn.add_q_proj", H), ("attn.add_k_proj", H), ("attn.add_v_proj", H)],
    "linear1": [("attn.to_q", H), ("attn.to_k", H), ("attn.to_v", H), ("proj_mlp", M)],
}


def array(*shape: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype("<f4")


def f32(a: np.ndarray) -> Tensor:
    return Tensor("F32", list(a.shape), np.ascontiguousarray(a, dtype="<f4").tobytes())


def values(t: Tensor) -> np.ndarray:
    if t.dtype == "BF16":
        return (np.frombuffer(t.data, "<u2").astype("<u4") << 16).view("<f4").reshape(t.shape).astype(np.float64)
    return np.frombuffer(t.data, {"F32": "<f4", "F16": "<f2"}[t.dtype]).reshape(t.shape).astype(np.float64)


def kohya_flux(path: Path, *, blocks: int = 2, metadata: dict[str, str] | None = None) -> Path:
    """An sd-scripts Flux LoRA: every double / single block module, guidance_in and the final layer's modulation,
    CLIP-L (lora_te1) and T5 (lora_te3) modules; one fused module has its own alpha."""
    shapes = {f"double_blocks_{b}_{n}": s for b in range(blocks) for n, s in DOUBLE_OUT.items()}
    shapes |= {f"single_blocks_{b}_{n}": s for b in range(blocks) for n, s in SINGLE_OUT.items()}
    shapes |= {"guidance_in_in_layer": (16, H), "final_layer_adaLN_modulation_1": (H, 2 * H)}
    modules = {f"lora_unet_{n}": s for n, s in shapes.items()}
    modules["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"] = (H, H)
    modules["lora_te3_encoder_block_0_layer_1_DenseReluDense_wi_0"] = (H, 2 * H)
    tensors = {}
    for i, (module, (n_in, n_out)) in enumerate(modules.items()):
        tensors[f"{module}.lora_down.weight"] = f32(array(R, n_in, seed=i))
        tensors[f"{module}.lora_up.weight"] = f32(array(n_out, R, seed=1000 + i))
        tensors[f"{module}.alpha"] = make_scalar(8.0 if module.endswith("single_blocks_1_linear1") else 2.0)
    meta = {"ss_network_dim": str(R), "ss_base_model_version": "flux1", "ss_network_module": "networks.lora_flux"}
    return write(path, tensors, metadata if metadata is not None else meta)


def peft_flux(path: Path, *, alphas: dict[str, float] | None = None, mlp: bool = False) -> Path:
    """A PEFT / SimpleTuner Flux LoRA: each projection has its own A; single blocks train q, k, v but not proj_mlp
    (SimpleTuner's default targets) unless ``mlp``; per-module alpha through alpha_pattern."""
    names = [f"transformer_blocks.{b}.{p}" for b in range(2) for p in
             ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
              "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "norm1.linear")]  # fmt: skip
    names += [f"single_transformer_blocks.{b}.{p}" for b in range(2) for p in ("attn.to_q", "attn.to_k", "attn.to_v")]
    names += [f"single_transformer_blocks.{b}.proj_mlp" for b in range(2) if mlp]
    names += ["single_transformer_blocks.0.proj_out", "norm_out.linear"]
    shape = {"ff.net.0.proj": (H, M), "ff.net.2": (M, H), "norm1.linear": (H, 6 * H), "proj_mlp": (H, M)}
    shape |= {"proj_out": (H + M, H), "norm_out.linear": (H, 2 * H)}
    tensors = {}
    for i, name in enumerate(names):
        n_in, n_out = next((s for suffix, s in shape.items() if name.endswith(suffix)), (H, H))
        tensors[f"transformer.{name}.lora_A.weight"] = f32(array(R, n_in, seed=i))
        tensors[f"transformer.{name}.lora_B.weight"] = f32(array(n_out, R, seed=500 + i))
    tensors["text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_A.weight"] = f32(array(R, H, seed=7))
    tensors["text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_B.weight"] = f32(array(2 * H, R, seed=8))
    peft = {"transformer.r": R, "transformer.lora_alpha": 4.0, "transformer.alpha_pattern": alphas or {}}
    peft |= {"transformer.rank_pattern": {}, "text_encoder.r": R, "text_encoder.lora_alpha": 4.0}
    meta = {"lora_adapter_metadata": json.dumps(peft), "modelspec.architecture": "flux-1-dev/lora", "note": "mine"}
    return write(path, tensors, meta)


def exact(tensors: dict[str, Tensor]) -> dict[str, tuple[str, list[int], bytes]]:
    return {k: (t.dtype, t.shape, t.data) for k, t in tensors.items()}


def diffusers_deltas(path: Path) -> dict[str, np.ndarray]:
    """W delta per diffusers module as diffusers applies it: B @ A * alpha / r, alpha from PEFT's metadata (r when
    there is none)."""
    tensors, meta = read(path)
    peft = json.loads(meta.get("lora_adapter_metadata", "{}"))
    out = {}
    for key in tensors:
        if key.endswith(".lora_A.weight"):
            module = key[: -len(".lora_A.weight")]
            root, _, sub = module.partition(".")
            a, b = values(tensors[key]), values(tensors[f"{module}.lora_B.weight"])
            alpha = peft.get(f"{root}.alpha_pattern", {}).get(sub, peft.get(f"{root}.lora_alpha", a.shape[0]))
            out[module] = b @ a * alpha / a.shape[0]
    return out


def kohya_deltas(path: Path) -> dict[str, np.ndarray]:
    """W delta per diffusers module as sd-scripts applies it (up @ down * alpha / rank on the fused Linear), cut into
    the diffusers parts by rows; all-zero parts (untrained) left out."""
    tensors, _ = read(path)
    out = {}
    for key in tensors:
        if not key.endswith(".lora_down.weight"):
            continue
        module = key[: -len(".lora_down.weight")]
        down, up = values(tensors[key]), values(tensors[f"{module}.lora_up.weight"])
        delta = up @ down * scalar(tensors[f"{module}.alpha"]) / down.shape[0]
        targets = K.flux_kohya_to_diffusers(module)
        if module.endswith("final_layer_adaLN_modulation_1"):  # BFL (shift, scale) vs diffusers (scale, shift)
            delta = np.concatenate([delta[H:], delta[:H]])
        kind = next((k for k in PARTS if module.endswith(k)), None)
        if kind is None:
            out[targets[0]] = delta
            continue
        row = 0
        for target, (suffix, rows) in zip(targets, PARTS[kind], strict=True):
            assert target.endswith(suffix)
            if np.any(delta[row : row + rows]):
                out[target] = delta[row : row + rows]
            row += rows
    return out


def assert_same_deltas(a: dict[str, np.ndarray], b: dict[str, np.ndarray], rtol: float = 1e-12) -> None:
    """Equal per module, relative to the module's largest entry (a rescaled float32 weight moves every product by
    about 1e-7 of its size, which near-cancelling sums show as a larger error on their small entries)."""
    assert sorted(a) == sorted(b)
    for module in a:
        np.testing.assert_allclose(a[module], b[module], rtol=0, atol=rtol * np.abs(b[module]).max(), err_msg=module)


def test_flux_module_names_map_both_ways() -> None:
    assert K.flux_kohya_to_diffusers("lora_unet_double_blocks_3_txt_attn_qkv") == (
        "transformer.transformer_blocks.3.attn.add_q_proj",
        "transformer.transformer_blocks.3.attn.add_k_proj",
        "transformer.transformer_blocks.3.attn.add_v_proj",
    )
    assert K.flux_kohya_to_diffusers("lora_unet_single_blocks_37_linear1")[-1] == (
        "transformer.single_transformer_blocks.37.proj_mlp"
    )
    assert K.flux_kohya_to_diffusers("lora_unet_double_blocks_0_img_mod_lin") == (
        "transformer.transformer_blocks.0.norm1.linear",
    )
    assert K.flux_kohya_to_diffusers("lora_unet_guidance_in_in_layer") == (
        "transformer.time_text_embed.guidance_embedder.linear_1",
    )
    assert K.flux_kohya_to_diffusers("lora_te3_encoder_block_0_layer_1_DenseReluDense_wi_0") == (
        "text_encoder_2.encoder.block.0.layer.1.DenseReluDense.wi_0",
    )
    assert K.flux_diffusers_to_kohya("transformer.single_transformer_blocks.2.proj_mlp") == (
        "lora_unet_single_blocks_2_linear1",
        3,
        4,
    )
    assert K.flux_diffusers_to_kohya("transformer.proj_out") == ("lora_unet_final_layer_linear", 0, 1)
    assert K.flux_diffusers_to_kohya("transformer.single_transformer_blocks.0.proj_out") == (
        "lora_unet_single_blocks_0_linear2",
        0,
        1,
    )
    assert K.flux_diffusers_to_kohya("text_encoder.text_model.encoder.layers.0.self_attn.q_proj")[0] == (
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    )


def test_kohya_round_trip_is_exact_and_splits_fused_modules_with_a_shared_down(tmp_path: Path) -> None:
    source = kohya_flux(tmp_path / "k.safetensors")
    diffusers = convert(source, tmp_path / "d.safetensors", "diffusers")
    back = convert(diffusers, tmp_path / "k2.safetensors", "kohya")
    (k1, m1), (d, md), (k2, m2) = read(source), read(diffusers), read(back)
    assert exact(k1) == exact(k2)
    assert {k: v for k, v in m2.items() if k != "loraforge_format"} == m1
    # linear1 -> q, k, v, proj_mlp: the same down for each, up cut by rows 8 + 8 + 8 + 32
    stem = "transformer.single_transformer_blocks.1"
    parts = [f"{stem}.attn.to_q", f"{stem}.attn.to_k", f"{stem}.attn.to_v", f"{stem}.proj_mlp"]
    assert [d[f"{p}.lora_B.weight"].shape for p in parts] == [[H, R], [H, R], [H, R], [M, R]]
    assert {d[f"{p}.lora_A.weight"].data for p in parts} == {
        k1["lora_unet_single_blocks_1_linear1.lora_down.weight"].data
    }
    peft = json.loads(md["lora_adapter_metadata"])
    assert peft["transformer.r"] == R and peft["transformer.lora_alpha"] == 2.0
    assert peft["transformer.alpha_pattern"] == {p.partition(".")[2]: 8.0 for p in parts}
    assert "text_encoder_2.encoder.block.0.layer.1.DenseReluDense.wi_0.lora_A.weight" in d
    assert_same_deltas(kohya_deltas(source), diffusers_deltas(diffusers))


def test_diffusers_round_trip_is_exact_through_block_diagonal_fusion(tmp_path: Path) -> None:
    """Own A per part: down = cat(A), up block-diagonal; proj_mlp untrained (zero rows), one part with twice the
    others' scale (a power-of-two ratio, so even the rescaled block round-trips bit for bit)."""
    source = peft_flux(tmp_path / "d.safetensors", alphas={"transformer_blocks.1.attn.to_k": 8.0})
    kohya = convert(source, tmp_path / "k.safetensors", "kohya")
    back = convert(kohya, tmp_path / "d2.safetensors", "diffusers")
    (d1, m1), (k, mk), (d2, m2) = read(source), read(kohya), read(back)
    assert exact(d1) == exact(d2)
    peft1, peft2 = json.loads(m1["lora_adapter_metadata"]), json.loads(m2["lora_adapter_metadata"])
    for field in ("r", "lora_alpha", "alpha_pattern", "rank_pattern"):
        assert peft2[f"transformer.{field}"] == peft1[f"transformer.{field}"], field
    assert m2["note"] == "mine" and m2["modelspec.architecture"] == "flux-1-dev/lora"
    assert "loraforge_flux_fused" not in m2
    # the fused Kohya modules sd-scripts expects, with rank 3 x 4 (qkv) and 3 x 4 (linear1 without the MLP part)
    assert k["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"].shape == [3 * R, H]
    assert k["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape == [3 * H + M, 3 * R]
    assert scalar(k["lora_unet_double_blocks_0_img_attn_qkv.alpha"]) == 4.0 * 3  # scale 4/4 over rank 12
    assert scalar(k["lora_unet_double_blocks_1_img_attn_qkv.alpha"]) == 2.0 * 12  # the largest scale, 8/4
    assert json.loads(mk["loraforge_flux_fused"])["lora_unet_single_blocks_0_linear1"]["ranks"] == [R, R, R, 0]
    assert_same_deltas(kohya_deltas(kohya), diffusers_deltas(source))
    assert_same_deltas(diffusers_deltas(back), diffusers_deltas(source))


@pytest.mark.parametrize("dtype, rtol", [("F32", 1e-6), ("F16", 2e-3)])
def test_parts_with_unequal_scales_keep_the_delta_and_every_alpha(tmp_path: Path, dtype: str, rtol: float) -> None:
    """Scales 3/4 and 4/4 cannot share one fused alpha: the smaller part's up is rescaled in Kohya and scaled back,
    so weights come back equal to float rounding, alphas exactly, and the applied delta is the same."""
    source = peft_flux(tmp_path / "d.safetensors", alphas={"single_transformer_blocks.1.attn.to_v": 3.0}, mlp=True)
    if dtype == "F16":
        tensors, meta = read(source)
        half = {k: Tensor("F16", t.shape, values(t).astype("<f2").tobytes()) for k, t in tensors.items()}
        source = write(source, half, meta)
    kohya = convert(source, tmp_path / "k.safetensors", "kohya")
    back = convert(kohya, tmp_path / "d2.safetensors", "diffusers")
    (d1, _), (d2, m2) = read(source), read(back)
    assert sorted(d1) == sorted(d2)
    for key in d1:
        np.testing.assert_allclose(values(d2[key]), values(d1[key]), rtol=rtol, err_msg=key)
    changed = [key for key in d1 if d1[key].data != d2[key].data]
    assert set(changed) <= {"transformer.single_transformer_blocks.1.attn.to_v.lora_B.weight"}
    assert json.loads(m2["lora_adapter_metadata"])["transformer.alpha_pattern"] == {
        "single_transformer_blocks.1.attn.to_v": 3.0
    }
    assert_same_deltas(kohya_deltas(kohya), diffusers_deltas(source), rtol=rtol)
    assert_same_deltas(diffusers_deltas(back), diffusers_deltas(source), rtol=rtol)


def test_an_untrained_part_of_a_shared_fusion_is_zero_rows_and_dropped_again(tmp_path: Path) -> None:
    """q, k and v sharing one A (as sd-scripts trains them) but no proj_mlp: linear1 gets zero MLP rows, which the
    split leaves out again, so the file comes back with exactly its own modules."""
    d, meta = read(convert(kohya_flux(tmp_path / "k.safetensors"), tmp_path / "d.safetensors", "diffusers"))
    d = {k: t for k, t in d.items() if ".proj_mlp." not in k}
    source = write(tmp_path / "no-mlp.safetensors", d, meta)
    kohya = convert(source, tmp_path / "k2.safetensors", "kohya")
    k, mk = read(kohya)
    up = values(k["lora_unet_single_blocks_0_linear1.lora_up.weight"])
    assert up.shape == (3 * H + M, R) and not up[3 * H :].any() and up[: 3 * H].all()
    assert json.loads(mk["loraforge_flux_fused"])["lora_unet_single_blocks_0_linear1"]["ranks"] == [R, R, R, 0]
    back = convert(kohya, tmp_path / "d2.safetensors", "diffusers")
    assert exact(read(back)[0]) == exact(d)
    assert_same_deltas(kohya_deltas(kohya), diffusers_deltas(source))


def test_the_mlp_width_falls_back_to_fluxs_ratio_when_no_tensor_shows_it(tmp_path: Path) -> None:
    """SimpleTuner's default Flux targets (to_q, to_k, to_v, to_out.0) touch no MLP: linear1's MLP rows are then
    FLUX.1's 4 x hidden."""
    d, _ = read(peft_flux(tmp_path / "d.safetensors"))
    keep = ("attn.to_q.", "attn.to_k.", "attn.to_v.", "attn.to_out.0.")
    source = write(tmp_path / "attn.safetensors", {k: t for k, t in d.items() if any(p in k for p in keep)}, {})
    k, _ = read(convert(source, tmp_path / "k.safetensors", "kohya"))
    assert k["lora_unet_single_blocks_1_linear1.lora_up.weight"].shape == [3 * H + 4 * H, 3 * R]
    assert_same_deltas(kohya_deltas(tmp_path / "k.safetensors"), diffusers_deltas(source))


def test_block_diagonal_kohya_files_from_elsewhere_are_recognised_without_our_metadata(tmp_path: Path) -> None:
    """sd-scripts' convert_flux_lora.py fuses PEFT parts block-diagonally with alpha = rank, and writes no record:
    the equal-rank block structure alone is found, and each part gets its own rank-4 A back."""
    down = array(3 * R, H, seed=1)
    up = np.zeros((3 * H, 3 * R), dtype="<f4")
    for j in range(3):
        up[j * H : (j + 1) * H, j * R : (j + 1) * R] = array(H, R, seed=10 + j)
    module = "lora_unet_double_blocks_0_img_attn_qkv"
    tensors = {f"{module}.lora_down.weight": f32(down), f"{module}.lora_up.weight": f32(up)}
    tensors[f"{module}.alpha"] = make_scalar(3.0 * R)
    source = write(tmp_path / "k.safetensors", tensors, {"ss_base_model_version": "flux1"})
    diffusers = convert(source, tmp_path / "d.safetensors", "diffusers")
    d, meta = read(diffusers)
    assert d["transformer.transformer_blocks.0.attn.to_k.lora_A.weight"].data == f32(down[R : 2 * R]).data
    assert json.loads(meta["lora_adapter_metadata"])["transformer.lora_alpha"] == float(R)
    assert_same_deltas(kohya_deltas(source), diffusers_deltas(diffusers))
    back = convert(diffusers, tmp_path / "k2.safetensors", "kohya")
    assert exact(read(back)[0]) == exact(tensors)


def test_bfloat16_weights_move_bit_for_bit(tmp_path: Path) -> None:
    tensors, meta = read(kohya_flux(tmp_path / "f32.safetensors", blocks=1))
    bf16 = {}
    for key, t in tensors.items():
        bits = (np.frombuffer(t.data, "<u4") >> 16).astype("<u2")  # truncate float32 to bfloat16
        bf16[key] = Tensor("BF16", t.shape, bits.tobytes())
    source = write(tmp_path / "bf16.safetensors", bf16, meta)
    back = convert(convert(source, tmp_path / "d.safetensors", "diffusers"), tmp_path / "k.safetensors", "kohya")
    assert exact(read(back)[0]) == exact(bf16)
    assert describe(tmp_path / "d.safetensors")["dtypes"] == {"BF16": len(read(tmp_path / "d.safetensors")[0])}


def test_inspect_reports_flux_for_both_layouts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kohya = kohya_flux(tmp_path / "k.safetensors", metadata={})  # no metadata: the key names alone say Flux
    info = describe(kohya)
    assert (info["layout"], info["family"], info["rank"], info["alpha"], info["text_encoder"]) == (
        "kohya",
        "flux",
        R,
        2.0,
        True,
    )
    diffusers = peft_flux(tmp_path / "d.safetensors")
    assert (describe(diffusers)["layout"], describe(diffusers)["family"]) == ("diffusers", "flux")
    assert main(["convert", str(kohya), str(tmp_path / "out.safetensors"), "--to", "diffusers"]) == 0
    assert main(["inspect", str(tmp_path / "out.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "layout        diffusers" in out and "family        flux" in out


def test_a_flux_base_model_is_not_taken_for_a_lora(tmp_path: Path) -> None:
    path = write(
        tmp_path / "flux1-dev.safetensors", {"double_blocks.0.img_attn.qkv.weight": f32(array(24, 8, seed=0))}, {}
    )
    with pytest.raises(LoraforgeError, match="not a LoRA"):
        describe(path)
    with pytest.raises(LoraforgeError, match="no LoRA weights"):
        convert(path, tmp_path / "out.safetensors", "diffusers")


def test_a_truncated_flux_lora_is_named_as_such(tmp_path: Path) -> None:
    path = kohya_flux(tmp_path / "k.safetensors", blocks=1)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(LoraforgeError, match="truncated"):
        convert(path, tmp_path / "out.safetensors", "diffusers")
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize(
    "tensors, to, message",
    [
        (  # qkv whose up does not split into three hidden-wide parts
            {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (R, H), "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": (3 * H + 1, R)},
            "diffusers",
            "do not split into 3 parts",
        ),
        (  # a down without its up
            {"lora_unet_single_blocks_0_linear2.lora_down.weight": (R, H + M)},
            "diffusers",
            "without its up weight",
        ),
        (  # a Flux module name sd-scripts never writes
            {"lora_unet_double_blocks_0_img_attn_norm.lora_down.weight": (R, H), "lora_unet_double_blocks_0_img_attn_norm.lora_up.weight": (H, R)},
            "diffusers",
            "not a Flux module",
        ),
        (  # diffusers' fused to_qkv has no sd-scripts counterpart
            {"transformer.single_transformer_blocks.0.attn.to_qkv.lora_A.weight": (R, H), "transformer.single_transformer_blocks.0.attn.to_qkv.lora_B.weight": (3 * H, R)},
            "kohya",
            "no counterpart in sd-scripts",
        ),
    ],
)  # fmt: skip
def test_malformed_flux_loras_give_a_clear_error(
    tmp_path: Path, tensors: dict[str, tuple[int, int]], to: str, message: str
) -> None:
    made = {key: f32(array(*shape, seed=i)) for i, (key, shape) in enumerate(tensors.items())}
    path = write(tmp_path / "bad.safetensors", made, {})
    with pytest.raises(LoraforgeError, match=message):
        convert(path, tmp_path / "out.safetensors", to)
    assert not (tmp_path / "out.safetensors").exists()
