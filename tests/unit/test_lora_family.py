"""`inspect` names the family of every LoRA layout each family's trainers write (and says what told it), `convert`
takes Chroma through the Flux layout and refuses a Kohya layout for Qwen-Image and FLUX.2 with the reason, and
`sample` hands diffusers a layout it reads.

Module names and shapes are those of the real runs (tests/fixtures/{kohya,simpletuner}/<family>/README.md) and, where
the widths are what tells families apart, of the released models; weights are random."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from test_lora_sd3_lumina2 import (
    LUMINA2_TINY,
    SD_SCRIPTS_LUMINA2,
    SD_SCRIPTS_SD3,
    R,
    Shape,
    exact,
    kohya_file,
    lumina2_modules,
    peft_file,
    sd3_modules,
)

from orchestrator.cli import main
from orchestrator.errors import LoraforgeError
from orchestrator.lora.convert import convert
from orchestrator.lora.inspect import describe
from orchestrator.lora.safetensors_io import read
from orchestrator.lora.sample import diffusers_readable

ATTENTION = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0")  # SimpleTuner's default targets


def attention(blocks: list[int], width: int, root: str = "transformer_blocks") -> dict[str, Shape]:
    return {f"transformer.{root}.{b}.{p}": (width, width) for b in blocks for p in ATTENTION}


def bfl(h: int, mlp: int, *, modulation: bool, gated: bool = False) -> dict[str, Shape]:
    """Black Forest Labs' block names as sd-scripts' lora_flux writes them (Flux, Chroma), one double and one single
    block; FLUX.2's gated MLPs take twice the MLP width in (mlp_0, linear1)."""
    up = 2 * mlp if gated else mlp
    out: dict[str, Shape] = {}
    for side in ("img", "txt"):
        out |= {
            f"lora_unet_double_blocks_0_{side}_attn_qkv": (h, 3 * h),
            f"lora_unet_double_blocks_0_{side}_mlp_0": (h, up),
        }
        out |= {
            f"lora_unet_double_blocks_0_{side}_mlp_2": (mlp, h),
            f"lora_unet_double_blocks_0_{side}_attn_proj": (h, h),
        }
        if modulation:
            out[f"lora_unet_double_blocks_0_{side}_mod_lin"] = (h, 6 * h)
    out |= {"lora_unet_single_blocks_0_linear1": (h, 3 * h + up), "lora_unet_single_blocks_0_linear2": (h + mlp, h)}
    return out


CHROMA_META = {
    "ss_network_module": "networks.lora_flux",
    "ss_model_type": "chroma",
    "modelspec.architecture": "chroma/lora",
}
FLUX2 = {"transformer.transformer_blocks.0.attn.to_q": (32, 32), "transformer.transformer_blocks.0.attn.to_out.0": (32, 32),
         "transformer.single_transformer_blocks.0.attn.to_qkv_mlp_proj": (32, 288)}  # fmt: skip
QWEN_MUSUBI = {"lora_unet_transformer_blocks_0_attn_to_q": (32, 32), "lora_unet_transformer_blocks_0_img_mlp_net_0_proj": (32, 128),
               "lora_unet_transformer_blocks_0_txt_mod_1": (32, 192)}  # fmt: skip

# (the file, the family inspect must name, what must have told it)
CASES: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "sd3 kohya (sd-scripts)": (lambda p: kohya_file(p, sd3_modules(), SD_SCRIPTS_SD3), "sd3", "metadata modelspec"),
    "sd3 kohya, no metadata": (lambda p: kohya_file(p, sd3_modules()), "sd3", "module names"),
    "sd3 diffusers (SimpleTuner checkpoint)": (lambda p: peft_file(p, attention([0, 1], 128), {"modelspec.architecture": "sd3/lora"}), "sd3", "metadata"),
    "sd3 diffusers (SimpleTuner final, 3.5 Large)": (lambda p: peft_file(p, attention([0, 37], 2432)), "sd3", "widths"),
    "sd3 diffusers (loraforge)": (lambda p: peft_file(p, attention([0], 128), {"loraforge_family": "sd3"}), "sd3", "loraforge_family"),
    "chroma kohya (sd-scripts)": (lambda p: kohya_file(p, bfl(16, 64, modulation=False), CHROMA_META), "chroma", "metadata"),
    "chroma diffusers (SimpleTuner checkpoint)": (lambda p: peft_file(p, attention([0], 32) | attention([0], 32, "single_transformer_blocks"), {"modelspec.architecture": "chroma/lora"}), "chroma", "metadata"),
    "chroma diffusers, approximator trained": (lambda p: peft_file(p, {"transformer.distilled_guidance_layer.in_proj": (64, 32)}), "chroma", "module names"),
    "flux kohya, no metadata": (lambda p: kohya_file(p, bfl(16, 64, modulation=True)), "flux", "module names"),
    "lumina2 kohya (sd-scripts)": (lambda p: kohya_file(p, lumina2_modules(LUMINA2_TINY), SD_SCRIPTS_LUMINA2), "lumina2", "metadata"),
    "lumina2 kohya, no metadata": (lambda p: kohya_file(p, lumina2_modules(LUMINA2_TINY)), "lumina2", "module names"),
    "lumina2 diffusers (SimpleTuner final)": (lambda p: peft_file(p, attention([0], 32, "layers") | attention([0], 32, "context_refiner")), "lumina2", "module names"),
    "qwen_image diffusers (SimpleTuner final)": (lambda p: peft_file(p, attention([0, 59], 3072)), "qwen_image", "widths"),
    "qwen_image diffusers (SimpleTuner checkpoint)": (lambda p: peft_file(p, attention([0, 1], 32), {"modelspec.architecture": "qwen_image-v1.0/lora"}), "qwen_image", "metadata"),
    "qwen_image diffusers, MLP trained": (lambda p: peft_file(p, {"transformer.transformer_blocks.0.img_mlp.net.2": (128, 32)}), "qwen_image", "module names"),
    "qwen_image kohya (musubi-tuner)": (lambda p: kohya_file(p, QWEN_MUSUBI), "qwen_image", "module names"),
    "flux2 diffusers (SimpleTuner final)": (lambda p: peft_file(p, FLUX2), "flux2", "module names"),
    "flux2 diffusers (SimpleTuner checkpoint)": (lambda p: peft_file(p, attention([0], 32), {"modelspec.architecture": "flux2-dev/lora"}), "flux2", "metadata"),
    "flux2 kohya (BFL names)": (lambda p: kohya_file(p, bfl(32, 96, modulation=False, gated=True)), "flux2", "widths"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_inspect_names_the_family_of_every_layout(tmp_path: Path, case: str) -> None:
    build, family, source = CASES[case]
    info = describe(build(tmp_path / "lora.safetensors"))
    assert (info["family"], source in info["family_from"]) == (family, True), info["family_from"]
    expected = (
        None if family in ("qwen_image", "flux2") else {"kohya": "diffusers", "diffusers": "kohya"}[info["layout"]]
    )
    assert info["converts_to"] == expected


def test_inspect_says_when_the_names_fit_more_than_one_family(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chroma = kohya_file(tmp_path / "chroma.safetensors", bfl(16, 64, modulation=False))  # metadata stripped
    info = describe(chroma)
    assert (info["family"], info["family_from"]) == ("flux", "module names (a Chroma LoRA has the same)")
    tiny = peft_file(tmp_path / "tiny.safetensors", attention([0, 1], 48))  # SD3, Flux or Qwen-Image: no telling
    assert describe(tiny)["family"] == "unknown"
    assert main(["inspect", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert "family        unknown" in out and "converts_to   -" in out and "look alike" in out


def test_chroma_converts_through_the_flux_layout_and_keeps_its_family(tmp_path: Path) -> None:
    """sd-scripts' Chroma file (no modulation Linears) splits like Flux; its metadata still says Chroma after."""
    source = kohya_file(tmp_path / "k.safetensors", bfl(16, 64, modulation=False), CHROMA_META)
    diffusers = convert(source, tmp_path / "d.safetensors", "diffusers")
    d, meta = read(diffusers)
    assert "transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight" in d
    assert not any(".norm" in k for k in d)
    assert describe(diffusers)["family"] == "chroma" and meta["ss_model_type"] == "chroma"
    assert exact(read(convert(diffusers, tmp_path / "k2.safetensors", "kohya"))[0]) == exact(read(source)[0])


@pytest.mark.parametrize(
    "modules, metadata, to, message",
    [
        (FLUX2, {}, "kohya", "FLUX.2 LoRAs have no Kohya layout loraforge writes: sd-scripts"),
        (attention([0], 32), {"modelspec.architecture": "qwen_image-v1.0/lora"}, "kohya", "Qwen-Image LoRAs have no"),
        (QWEN_MUSUBI, {}, "diffusers", "musubi-tuner's"),
    ],
)
def test_qwen_image_and_flux2_have_no_kohya_conversion_and_say_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], modules: dict, metadata: dict, to: str, message: str
) -> None:
    build = peft_file if to == "kohya" else kohya_file
    source = build(tmp_path / "in.safetensors", modules, metadata)
    with pytest.raises(LoraforgeError, match=message):
        convert(source, tmp_path / "out.safetensors", to)
    assert main(["convert", str(source), str(tmp_path / "out.safetensors"), "--to", to]) == 2
    assert "load_lora_weights" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists()


def test_a_family_the_file_leaves_open_is_given_with_family(tmp_path: Path) -> None:
    source = peft_file(tmp_path / "d.safetensors", attention([0, 1], 48))  # tiny widths: the names fit four families
    with pytest.raises(LoraforgeError, match="cannot tell which model") as caught:
        convert(source, tmp_path / "k.safetensors", "kohya")
    assert "--family" in str(caught.value)
    assert main(["convert", str(source), str(tmp_path / "k.safetensors"), "--to", "kohya", "--family", "sd3"]) == 0
    k, _ = read(tmp_path / "k.safetensors")
    assert k["lora_unet_joint_blocks_1_x_block_attn_qkv.lora_down.weight"].shape == [3 * R, 48]


def test_sample_hands_diffusers_a_layout_it_reads(tmp_path: Path) -> None:
    """diffusers reads none of sd-scripts' SD3 and Lumina 2 names (and misreads some Flux ones): those go converted;
    SD 1.5 / SDXL Kohya files and every diffusers-layout file go as they are."""
    for name, modules, meta in (("sd3", sd3_modules(), SD_SCRIPTS_SD3), ("lumina2", lumina2_modules(LUMINA2_TINY), {})):
        source = kohya_file(tmp_path / f"{name}.safetensors", modules, meta)
        (tmp_path / name).mkdir()
        readable = diffusers_readable(source, tmp_path / name)
        assert readable.parent == tmp_path / name and describe(readable)["layout"] == "diffusers"
        assert json.loads(read(readable)[1]["lora_adapter_metadata"])["transformer.lora_alpha"] == 2.0
    sd15 = kohya_file(tmp_path / "sd15.safetensors", {"lora_unet_down_blocks_0_attentions_0_proj_in": (32, 32)})
    qwen = peft_file(tmp_path / "qwen.safetensors", attention([0, 59], 3072))
    assert [diffusers_readable(p, tmp_path) for p in (sd15, qwen)] == [sd15, qwen]
