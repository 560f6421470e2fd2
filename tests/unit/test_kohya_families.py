"""sd-scripts' SD3, Chroma and Lumina 2 (and the files Flux's model comes in): `loraforge render` writes the family's
script and options, Qwen-Image and FLUX.2 are refused with the reason, and a model's parts are found in the layouts
real downloads have (or refused before launch in one line).

The model files here are real .safetensors headers with empty tensors: rendering reads only the names (whether a
checkpoint holds a part), never the weights."""

from __future__ import annotations

import json
import struct
import tomllib
from pathlib import Path
from typing import Any

import pytest

from backends.kohya import KohyaBackend, parts
from backends.kohya.families import REFUSED, families, family
from backends.kohya.options import build_options
from orchestrator.cli import main
from orchestrator.dataset.model import load_dataset
from orchestrator.envs import BackendEnv
from orchestrator.errors import LoraforgeError
from orchestrator.job import JobSpec, build_job
from orchestrator.runs import create_run

CPU = BackendEnv("kohya", Path("/envs/kohya/bin/python"), root=Path("/opt/sd-scripts"), device="cpu")
GPU = BackendEnv("kohya", Path("/envs/kohya/bin/python"), root=Path("/opt/sd-scripts"), device="cuda")
SD3_TOKENIZERS = ["openai_clip-vit-large-patch14", "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k", "google_t5-v1_1-xxl"]
PIPELINES = {
    "sd3": "StableDiffusion3Pipeline",
    "chroma": "ChromaPipeline",
    "lumina2": "Lumina2Pipeline",
    "qwen_image": "QwenImagePipeline",
    "flux2": "Flux2Pipeline",
}


def safetensors(path: Path, *keys: str) -> Path:
    """A valid .safetensors file holding empty tensors under ``keys``."""
    header = {key: {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for key in keys}
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def tokenizer(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer_config.json").write_text("{}")
    return folder


def diffusers_folder(folder: Path, pipeline: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    return folder


def tiny_layout(root: Path, family_name: str) -> Path:
    """What loraforge's tiny builders write: a diffusers folder with sd-scripts' single files in kohya/."""
    model = diffusers_folder(root / f"tiny-{family_name}", PIPELINES[family_name])
    kohya = model / "kohya"
    if family_name == "sd3":
        safetensors(kohya / "sd3.safetensors", "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight")
        for name in ("clip_l", "clip_g", "t5xxl", "vae"):
            safetensors(kohya / f"{name}.safetensors", "weight")
        for entry in SD3_TOKENIZERS:
            tokenizer(kohya / "tokenizers" / entry)
    elif family_name == "chroma":
        safetensors(kohya / "chroma.safetensors", "distilled_guidance_layer.in_proj.weight")
        safetensors(kohya / "t5xxl.safetensors", "weight")
        safetensors(kohya / "ae.safetensors", "weight")
        for entry in ("openai_clip-vit-large-patch14", "google_t5-v1_1-xxl"):
            tokenizer(kohya / "tokenizers" / entry)
    elif family_name == "lumina2":
        safetensors(kohya / "lumina2.safetensors", "cap_embedder.0.weight")
        safetensors(kohya / "gemma2.safetensors", "weight")
        safetensors(kohya / "ae.safetensors", "weight")
        tokenizer(kohya / "tokenizer_cache" / "models--google--gemma-2-2b" / "snapshots" / ("0" * 40))
    return model


@pytest.fixture
def data(tmp_path: Path) -> Path:
    from PIL import Image

    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (64, 64)).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"ohwx, photo {name}")
    return folder


def job(tmp_path: Path, model: Path | str, family_name: str | None, **extra: Any) -> JobSpec:
    spec: dict[str, Any] = {
        "name": "fam",
        "base_model": str(model),
        "family": family_name,
        "dataset": str(tmp_path / "data"),
        "trigger": "ohwx",
        "output": {"dir": str(tmp_path / "runs")},
        "training": {"steps": 4},
    }
    spec.update(extra)
    return build_job(spec)


def render_cli(tmp_path: Path, model: Path, *flags: str) -> tuple[int, str, Path]:
    out = tmp_path / "rendered-out"
    code = main(
        ["render", "--name", "fam", "--base-model", str(model), "--dataset", str(tmp_path / "data")]
        + ["--trigger", "ohwx", "--steps", "4", "--backend", "kohya", "-o", str(out), *flags]
    )
    return code, str(out), out / "rendered"


# --- render through the command line ----------------------------------------------------------------------------

EXPECTED = {
    "sd3": (
        "sd3_train_network.py",
        "networks.lora_sd3",
        {"clip_l", "clip_g", "t5xxl", "vae"},
        {"weighting_scheme": "uniform", "t5xxl_max_token_length": 256},
    ),
    "chroma": (
        "flux_train_network.py",
        "networks.lora_flux",
        {"t5xxl", "ae"},
        {
            "model_type": "chroma",
            "guidance_scale": 0.0,
            "apply_t5_attn_mask": True,
            "timestep_sampling": "sigmoid",
            "model_prediction_type": "raw",
            "t5xxl_max_token_length": 512,
        },
    ),
    "lumina2": (
        "lumina_train_network.py",
        "networks.lora_lumina",
        {"gemma2", "ae"},
        {
            "timestep_sampling": "nextdit_shift",
            "discrete_flow_shift": 6.0,
            "model_prediction_type": "raw",
            "gemma2_max_token_length": 256,
            "system_prompt": "You are an assistant designed to generate high-quality images based on user prompts.",
        },
    ),
}


@pytest.mark.parametrize("family_name", sorted(EXPECTED))
def test_render_writes_the_family_script_and_options(
    tmp_path: Path, data: Path, family_name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LORAFORGE_DEVICE", "cpu")
    model = tiny_layout(tmp_path, family_name)
    code, _, rendered = render_cli(tmp_path, model)  # the family is read from model_index.json
    out = capsys.readouterr().out
    assert code == 0, out
    script, module, part_options, family_options = EXPECTED[family_name]
    assert f" {script} --config_file {rendered / 'config.toml'}" in out
    config = tomllib.loads((rendered / "config.toml").read_text())
    assert config["network_module"] == module and config["network_train_unet_only"] is True
    checkpoint = Path(config["pretrained_model_name_or_path"])
    assert checkpoint.parent == model / "kohya" and checkpoint.suffix == ".safetensors"  # never the diffusers folder
    for option in part_options:
        assert Path(config[option]) == model / "kohya" / f"{option}.safetensors"
    assert {key: config[key] for key in family_options} == family_options
    assert config["cache_text_encoder_outputs"] is True and config["cache_latents"] is True
    # on CPU: bf16 (the text encoder is loaded in the training dtype), said in a note
    assert config["mixed_precision"] == "bf16" and "trained in bf16 on CPU" in out
    cache = Path(config["tokenizer_cache_dir"])
    assert cache == rendered / "tokenizers"  # the run's own copy: sd-scripts never writes into the model folder
    assert sorted(p.name for p in cache.iterdir()) == sorted(family(family_name).cache_entries)


@pytest.mark.parametrize("family_name", ["qwen_image", "flux2"])
def test_a_family_sd_scripts_cannot_train_exits_2_with_the_reason(
    tmp_path: Path, data: Path, family_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model = diffusers_folder(tmp_path / "model", PIPELINES[family_name])
    code, out_dir, _ = render_cli(tmp_path, model)
    err = "".join(capsys.readouterr())
    assert code == 2
    assert REFUSED[family_name] in err and "no" in REFUSED[family_name] and "trainer" in REFUSED[family_name]
    assert "--backend simpletuner" in err and not Path(out_dir).exists()
    code, _, _ = render_cli(tmp_path, model, "--family", family_name)  # said explicitly: the same
    assert code == 2 and REFUSED[family_name] in "".join(capsys.readouterr())


def test_every_family_sd_scripts_knows_names_a_script_in_the_checkout() -> None:
    root = Path(__file__).resolve().parents[2] / "third_party" / "sd-scripts"
    if not (root / "train_network.py").exists():
        pytest.skip("third_party/sd-scripts is not checked out: git submodule update --init")
    for spec in families().values():
        assert (root / spec.script).is_file(), spec.script
        assert (root / (spec.network_module.replace(".", "/") + ".py")).is_file(), spec.network_module
    assert not (set(REFUSED) & set(families()))
    assert not list(root.glob("qwen*_train_network.py")) and not list(root.glob("flux2*_train_network.py"))


# --- the parts of a model ---------------------------------------------------------------------------------------


def resolve(tmp_path: Path, model: Path | str, family_name: str, **extra: Any) -> parts.Resolved:
    return parts.resolve(job(tmp_path, model, family_name, **extra), family(family_name))


def test_parts_given_in_backend_args_win_over_files_found(tmp_path: Path) -> None:
    model = tiny_layout(tmp_path, "sd3")
    mine = safetensors(tmp_path / "elsewhere" / "my_t5.safetensors", "weight")
    found = resolve(tmp_path, model, "sd3", backend_args={"kohya": {"t5xxl": str(mine)}})
    assert found.options["t5xxl"] == str(mine) and found.options["clip_l"] == str(
        model / "kohya" / "clip_l.safetensors"
    )
    for bad, why in ((tmp_path / "nothing.safetensors", "does not exist"), (tmp_path, "is a folder")):
        with pytest.raises(LoraforgeError, match=f"backend_args.kohya.t5xxl: .* {why}"):
            resolve(tmp_path, model, "sd3", backend_args={"kohya": {"t5xxl": str(bad)}})


def test_stabilitys_sd35_repo(tmp_path: Path) -> None:
    """stabilityai/stable-diffusion-3.5-large: the checkpoint (with its VAE) at the top, text encoders in
    text_encoders/ (fp16 and fp8 T5), the diffusers layout beside them (its tokenizers are used)."""
    repo = diffusers_folder(tmp_path / "stable-diffusion-3.5-large", "StableDiffusion3Pipeline")
    safetensors(repo / "sd3.5_large.safetensors", "model.diffusion_model.x_embedder.proj.weight", "first_stage_model.x")
    for name in ("clip_g", "clip_l", "t5xxl_fp16", "t5xxl_fp8_e4m3fn"):
        safetensors(repo / "text_encoders" / f"{name}.safetensors", "weight")
    safetensors(repo / "transformer" / "diffusion_pytorch_model.safetensors", "weight")
    for sub in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        tokenizer(repo / sub)
    for base in (repo, repo / "sd3.5_large.safetensors"):  # the folder, or its checkpoint file
        found = resolve(tmp_path, base, "sd3")
        te = repo / "text_encoders"
        assert found.options == {
            "pretrained_model_name_or_path": str(repo / "sd3.5_large.safetensors"),
            "clip_l": str(te / "clip_l.safetensors"),
            "clip_g": str(te / "clip_g.safetensors"),
            "t5xxl": str(te / "t5xxl_fp16.safetensors"),  # fp16 before fp8
        }  # no vae: the checkpoint holds it (first_stage_model.)
        assert found.tokenizers == dict(
            zip(SD3_TOKENIZERS, [repo / s for s in ("tokenizer", "tokenizer_2", "tokenizer_3")], strict=True)
        )
        assert not found.notes


def test_a_checkpoint_that_holds_its_text_encoders_needs_no_others(tmp_path: Path) -> None:
    keys = [f"text_encoders.{n}.transformer.x" for n in ("clip_l", "clip_g", "t5xxl")] + ["first_stage_model.x"]
    checkpoint = safetensors(tmp_path / "sd3" / "sd3_medium_incl_clips_t5xxlfp16.safetensors", *keys)
    found = resolve(tmp_path, checkpoint, "sd3")
    assert found.options == {"pretrained_model_name_or_path": str(checkpoint)}
    assert "google_t5-v1_1-xxl" in found.notes[0] and "Hugging Face hub" in found.notes[0]  # no tokenizers beside


def test_bfls_flux_repo_lacks_the_text_encoders_and_says_how_to_pass_them(tmp_path: Path) -> None:
    repo = diffusers_folder(tmp_path / "FLUX.1-dev", "FluxPipeline")
    safetensors(repo / "flux1-dev.safetensors", "double_blocks.0.img_attn.qkv.weight")
    safetensors(repo / "ae.safetensors", "weight")
    safetensors(repo / "text_encoder" / "model.safetensors", "weight")  # diffusers' own: never taken as a part
    with pytest.raises(LoraforgeError) as info:
        resolve(tmp_path, repo, "flux")
    message, hint = info.value.message, info.value.hint or ""
    assert "\n" not in message and "\n" not in hint
    assert "CLIP-L text encoder (clip_l.safetensors), T5-XXL text encoder (t5xxl.safetensors)" in message
    assert str(repo / "flux1-dev.safetensors") in message and "autoencoder" not in message
    assert "--set backend_args.kohya.clip_l=FILE --set backend_args.kohya.t5xxl=FILE" in hint
    assert "comfyanonymous/flux_text_encoders" in hint
    # with ComfyUI's text encoders put beside the download: found
    for name in ("clip_l", "t5xxl_fp16"):
        safetensors(tmp_path / "text_encoders" / f"{name}.safetensors", "weight")
    found = resolve(tmp_path, repo, "flux")
    assert found.options["t5xxl"] == str(tmp_path / "text_encoders" / "t5xxl_fp16.safetensors")
    assert found.options["ae"] == str(repo / "ae.safetensors")


def test_comfyui_models_folder_for_chroma(tmp_path: Path) -> None:
    models = tmp_path / "ComfyUI" / "models"
    checkpoint = safetensors(models / "diffusion_models" / "Chroma1-HD.safetensors", "distilled_guidance_layer.x")
    safetensors(models / "clip" / "t5xxl_fp8_e4m3fn.safetensors", "weight")
    safetensors(models / "vae" / "ae.safetensors", "weight")
    found = resolve(tmp_path, checkpoint, "chroma")
    assert found.options == {
        "pretrained_model_name_or_path": str(checkpoint),
        "t5xxl": str(models / "clip" / "t5xxl_fp8_e4m3fn.safetensors"),
        "ae": str(models / "vae" / "ae.safetensors"),
    }


def test_comfy_orgs_lumina2_repackaged_download(tmp_path: Path) -> None:
    repo = tmp_path / "Lumina_Image_2.0_Repackaged"
    split = repo / "split_files"
    safetensors(split / "diffusion_models" / "lumina_2_model_bf16.safetensors", "cap_embedder.0.weight")
    safetensors(split / "text_encoders" / "gemma_2_2b_fp16.safetensors", "weight")
    safetensors(split / "vae" / "ae.safetensors", "weight")
    safetensors(repo / "all_in_one" / "lumina_2.safetensors", "model.diffusion_model.x")  # not what sd-scripts reads
    found = resolve(tmp_path, repo, "lumina2")
    assert found.options == {
        "pretrained_model_name_or_path": str(split / "diffusion_models" / "lumina_2_model_bf16.safetensors"),
        "gemma2": str(split / "text_encoders" / "gemma_2_2b_fp16.safetensors"),
        "ae": str(split / "vae" / "ae.safetensors"),
    }
    assert "models--google--gemma-2-2b" in found.notes[0]


def test_a_diffusers_folder_is_never_read_as_a_checkpoint(tmp_path: Path, data: Path) -> None:
    model = diffusers_folder(tmp_path / "lumina2-diffusers", "Lumina2Pipeline")
    safetensors(model / "transformer" / "diffusion_pytorch_model.safetensors", "weight")
    with pytest.raises(LoraforgeError) as info:
        resolve(tmp_path, model, "lumina2")
    assert "is a diffusers folder with no Lumina Image 2.0 checkpoint" in info.value.message
    assert "--backend simpletuner" in (info.value.hint or "")
    # before anything is written (the fixture lumina2/fail_diffusers_folder is what sd-scripts made of it)
    j = job(tmp_path, model, "lumina2")
    run = create_run(j, "kohya")
    with pytest.raises(LoraforgeError, match="diffusers folder"):
        KohyaBackend().render(j, load_dataset(data), run, CPU)
    assert not any(run.rendered.iterdir()) and not run.data.exists()


def test_a_hub_id_or_a_folder_of_several_checkpoints_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LoraforgeError, match="sd-scripts trains sd3 from local files, not a hub id"):
        resolve(tmp_path, "stabilityai/stable-diffusion-3.5-large", "sd3")
    folder = tmp_path / "models"
    for name in ("sd3_medium.safetensors", "sd3_medium_incl_clips.safetensors"):
        safetensors(folder / name, "model.diffusion_model.x")
    with pytest.raises(LoraforgeError, match=r"holds 2 SD3 / SD3.5 checkpoints \(sd3_medium.safetensors, sd3_med"):
        resolve(tmp_path, folder, "sd3")


def test_a_broken_checkpoint_is_refused_naming_it(tmp_path: Path) -> None:
    model = tiny_layout(tmp_path, "sd3")
    for content in (b"", b"\xff" * 8, struct.pack("<Q", 2000) + b"[" * 2000):  # empty, lying size, deep nesting
        (model / "kohya" / "sd3.safetensors").write_bytes(content)
        with pytest.raises(LoraforgeError, match=r"sd3.safetensors is not a valid .safetensors file"):
            resolve(tmp_path, model, "sd3")


def test_the_tiny_builders_layout_through_the_checkpoint_file_too(tmp_path: Path) -> None:
    model = tiny_layout(tmp_path, "lumina2")
    found = resolve(tmp_path, model / "kohya" / "lumina2.safetensors", "lumina2")
    assert found.options["gemma2"] == str(model / "kohya" / "gemma2.safetensors")
    assert found.tokenizers == {
        "models--google--gemma-2-2b": model / "kohya" / "tokenizer_cache" / "models--google--gemma-2-2b"
    }


def test_a_tokenizer_cache_given_is_used_as_it_is(tmp_path: Path, data: Path) -> None:
    model = tiny_layout(tmp_path, "chroma")
    cache = tmp_path / "my-tokenizers"
    j = job(tmp_path, model, "chroma", backend_args={"kohya": {"tokenizer_cache_dir": str(cache)}})
    assert parts.resolve(j, family("chroma")).tokenizers == {}
    rendered = KohyaBackend().render(j, load_dataset(data), create_run(j, "kohya"), CPU)
    assert rendered.values["tokenizer_cache_dir"] == str(cache)


# --- the options a family changes -----------------------------------------------------------------------------


def options(tmp_path: Path, family_name: str, *, cpu: bool = True, **extra: Any) -> tuple[dict[str, Any], list[str]]:
    j = job(tmp_path, tmp_path / "model.safetensors", family_name, **extra)
    return build_options(j, rendered=tmp_path, output=tmp_path, tokenizers=None, cpu=cpu, resume=None)


def test_precision_on_cpu_and_gpu(tmp_path: Path) -> None:
    for family_name in ("sd3", "chroma", "lumina2"):
        gpu, notes = options(tmp_path, family_name, cpu=False)
        assert (gpu["mixed_precision"], gpu["sdpa"], notes) == ("bf16", True, [])
        fp32, notes = options(tmp_path, family_name, training={"steps": 4, "precision": "fp32"})
        assert fp32["mixed_precision"] == "no" and "training.precision=fp32 on CPU" in notes[0]  # asked for: kept
    sd15, notes = options(tmp_path, "sd15")  # unchanged: no mixed precision on CPU
    assert sd15["mixed_precision"] == "no" and "trained in fp32" in notes[0]


def test_text_encoder_training_and_caching(tmp_path: Path) -> None:
    sd3, notes = options(tmp_path, "sd3", training={"steps": 4, "text_encoder_lr": 1e-5})
    assert sd3["text_encoder_lr"] == 1e-5 and "cache_text_encoder_outputs" not in sd3  # trained: not cached
    assert "network_train_unet_only" not in sd3
    lumina, notes = options(tmp_path, "lumina2", training={"steps": 4, "text_encoder_lr": 1e-5})
    assert "text_encoder_lr" not in lumina and lumina["network_train_unet_only"] is True
    assert lumina["cache_text_encoder_outputs"] is True
    assert any(n.startswith("training.text_encoder_lr: no text encoder is trained for lumina2") for n in notes)
    shuffled, notes = options(tmp_path, "chroma", training={"steps": 4, "shuffle_captions": True})
    assert "cache_text_encoder_outputs" not in shuffled  # sd-scripts refuses to cache shuffled captions
    assert any(n.startswith("training.shuffle_captions: the text encoders run at every step") for n in notes)


def test_backend_args_go_on_top_of_the_family_options(tmp_path: Path) -> None:
    sd3, _ = options(
        tmp_path, "sd3", backend_args={"kohya": {"t5xxl_max_token_length": 77, "weighting_scheme": "mode"}}
    )
    assert (sd3["t5xxl_max_token_length"], sd3["weighting_scheme"]) == (77, "mode")


def test_backend_args_are_checked_against_the_familys_own_script(tmp_path: Path, data: Path) -> None:
    model = tiny_layout(tmp_path, "sd3")
    ok = job(tmp_path, model, "sd3", backend_args={"kohya": {"t5xxl_max_token_length": 32, "clip_g_dropout_rate": 0.1}})
    rendered = KohyaBackend().render(ok, load_dataset(data), create_run(ok, "kohya"), CPU)
    assert rendered.values["t5xxl_max_token_length"] == 32
    sd15 = job(tmp_path, tmp_path / "m.safetensors", "sd15", backend_args={"kohya": {"t5xxl_max_token_length": 32}})
    with pytest.raises(LoraforgeError, match="sd-scripts' train_network.py has no option t5xxl_max_token_length"):
        KohyaBackend().render(sd15, load_dataset(data), create_run(sd15, "kohya"), CPU)
    # Flux's own options (refused before as train_network.py's unknowns) and its parts, given in backend_args
    files = {name: str(safetensors(tmp_path / "flux" / f"{name}.safetensors", "w")) for name in ("clip_l", "t5", "ae")}
    checkpoint = safetensors(tmp_path / "flux" / "diffusion_pytorch_model-00001-of-00003.safetensors", "x")
    given = {"clip_l": files["clip_l"], "t5xxl": files["t5"], "ae": files["ae"], "guidance_scale": 1.0}
    flux = job(tmp_path, checkpoint, "flux", backend_args={"kohya": {**given, "blocks_to_swap": 8}})
    rendered = KohyaBackend().render(flux, load_dataset(data), create_run(flux, "kohya"), CPU)
    assert {key: rendered.values[key] for key in given} == given and rendered.values["blocks_to_swap"] == 8
    assert rendered.values["pretrained_model_name_or_path"] == str(checkpoint)  # any file name, when it is the file


def test_only_plain_lora_for_the_families_with_their_own_module(tmp_path: Path, data: Path) -> None:
    model = tiny_layout(tmp_path, "sd3")
    j = job(tmp_path, model, "sd3", network={"type": "loha"})
    with pytest.raises(LoraforgeError, match=r"network.type=loha: sd-scripts trains sd3 with its own LoRA module"):
        KohyaBackend().render(j, load_dataset(data), create_run(j, "kohya"), CPU)


def test_chroma_samples_need_no_embedded_guidance_and_a_cfg_scale(tmp_path: Path, data: Path) -> None:
    model = tiny_layout(tmp_path, "chroma")
    j = job(tmp_path, model, "chroma", sampling={"every_n_steps": 2, "prompts": ["ohwx, a cat"], "seed": 3})
    run = create_run(j, "kohya")
    KohyaBackend().render(j, load_dataset(data), run, CPU)
    assert (run.rendered / "prompts.txt").read_text() == "ohwx, a cat --s 20 --d 3 --g 0 --l 4.0\n"


def test_command_runs_the_familys_script(tmp_path: Path, data: Path) -> None:
    for family_name, (script, *_) in EXPECTED.items():
        j = job(tmp_path, tiny_layout(tmp_path / family_name, family_name), family_name)
        rendered = KohyaBackend().render(j, load_dataset(data), create_run(j, "kohya"), GPU)
        launch = KohyaBackend().command(j, rendered, GPU)
        assert launch.argv[5:] == [script, "--config_file", str(rendered.files["config"])]
