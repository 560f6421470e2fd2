"""The real loading and generation code of every model captioner, on tiny random models built at test time.

Nothing is downloaded: each model is written with save_pretrained (or as ONNX + selected_tags.csv) into a session
folder and read back through the same code path a downloaded checkpoint takes, with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("torch", reason="needs the caption extra: pip install -e '.[caption]'")
pytest.importorskip("transformers", reason="needs the caption extra: pip install -e '.[caption]'")
pytest.importorskip("onnxruntime", reason="needs the caption extra: pip install -e '.[caption]'")
pytest.importorskip("onnx", reason="builds the tiny WD14 tagger: pip install -e '.[dev]'")

from orchestrator.captions import caption_dataset  # noqa: E402
from orchestrator.captions.files import caption_path, find_images  # noqa: E402
from orchestrator.cli import main  # noqa: E402
from orchestrator.errors import LoraforgeError  # noqa: E402

MODELS = ("florence2", "blip", "blip2", "wd14")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Built once per test session (about a second in all after the transformers import)."""
    from orchestrator.captions import tiny

    root = tmp_path_factory.mktemp("tiny-captioners")
    with pytest.MonkeyPatch.context() as mp:  # if this is transformers' first import, its cache paths stay in tmp
        mp.setenv("HF_HOME", str(root / "hf-home"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        return {name: tiny.build(name, root / name) for name in MODELS}


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Real photographs shipped inside scikit-image, plus one file that is not an image."""
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the test photos: pip install -e '.[dev]'")
    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(data.astronaut()).resize((128, 128)).save(root / "astronaut.jpg")
    Image.fromarray(data.chelsea()).save(root / "chelsea cat.png")
    Image.fromarray(data.coffee()).convert("RGBA").save(root / "コーヒー.webp")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _captions(root: Path) -> dict[str, str]:
    return {p.name: caption_path(p).read_text(encoding="utf-8") for p in find_images(root) if caption_path(p).exists()}


@pytest.mark.parametrize("name", MODELS)
def test_tiny_model_captions_every_readable_image(name: str, tiny_models: dict[str, Path], photos: Path) -> None:
    result = caption_dataset(
        photos, captioner=name, model=str(tiny_models[name]), trigger="ohwx person", batch_size=2, device="cpu"
    )
    assert (result.written, result.kept) == (3, 0)
    assert [(p.name, "cannot" in r or "not an image" in r) for p, r in result.skipped] == [("broken.jpg", True)]
    got = _captions(photos)
    assert sorted(got) == ["astronaut.jpg", "chelsea cat.png", "コーヒー.webp"]
    for text in got.values():  # random weights caption noise, but the trigger comes first, once, on one line
        assert text.startswith("ohwx person")
        assert text.count("\n") == 1 and text.endswith("\n")
    again = caption_dataset(photos, captioner=name, model=str(tiny_models[name]), trigger="ohwx person")
    assert (again.written, again.kept, again.trigger_added) == (0, 3, 0)
    assert _captions(photos) == got


@pytest.mark.parametrize("task", ["detailed"])  # "caption" runs above; more-detailed only differs in length
def test_florence2_tasks(task: str, tiny_models: dict[str, Path], photos: Path) -> None:
    result = caption_dataset(photos, captioner="florence2", model=str(tiny_models["florence2"]), task=task)
    assert result.written == 3


def test_overwrite_regenerates_with_a_model(tiny_models: dict[str, Path], photos: Path) -> None:
    caption_path(photos / "astronaut.jpg").write_text("an astronaut", encoding="utf-8")
    kept = caption_dataset(photos, captioner="wd14", model=str(tiny_models["wd14"]), trigger="sks")
    assert kept.kept == 1 and _captions(photos)["astronaut.jpg"] == "sks, an astronaut\n"
    caption_dataset(photos, captioner="wd14", model=str(tiny_models["wd14"]), trigger="sks", mode="overwrite")
    assert _captions(photos)["astronaut.jpg"] != "sks, an astronaut\n"


def test_wd14_tags_are_formatted(tiny_models: dict[str, Path], photos: Path) -> None:
    caption_dataset(photos, captioner="wd14", model=str(tiny_models["wd14"]), general_threshold=0.0)
    for text in _captions(photos).values():
        tags = text.strip().split(", ")
        assert not {"general", "sensitive", "questionable", "explicit"} & set(tags)  # ratings dropped
        assert {"red hat", "1girl", "^_^"} <= set(tags)  # spaces for underscores, kaomoji kept
        assert "red_hat" not in text


def test_hub_id_not_available_offline_is_one_clear_error(photos: Path) -> None:
    with pytest.raises(LoraforgeError) as info:
        caption_dataset(photos, captioner="blip", model="loraforge-test/no-such-captioner")
    err = info.value
    assert "loraforge-test/no-such-captioner" in err.message and "not a local folder" in err.message
    assert "Hugging Face cache" in err.message
    assert "--model DIR" in (err.hint or "")


def test_default_models_are_real_hub_ids(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["caption", str(photos), "--captioner", "wd14", "--trigger", "x"]) == 2
    err = capsys.readouterr().err
    assert "SmilingWolf/wd-v1-4-moat-tagger-v2" in err and "fix:" in err and "Traceback" not in err


def test_a_folder_of_another_model_is_explained(tiny_models: dict[str, Path], photos: Path) -> None:
    with pytest.raises(LoraforgeError, match="does not hold a usable BLIP"):
        caption_dataset(photos, captioner="blip", model=str(tiny_models["wd14"]))
    with pytest.raises(LoraforgeError, match="does not hold a WD14 tagger"):
        caption_dataset(photos, captioner="wd14", model=str(tiny_models["blip"]))
    with pytest.raises(LoraforgeError, match="does not exist"):
        caption_dataset(photos, captioner="florence2", model=str(photos / "no-model-here"))


@pytest.fixture
def remote_code_model(tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Florence-2 folder whose config asks for its own modelling code; that code leaves a marker when it runs."""
    import shutil

    import transformers.dynamic_module_utils as dynamic

    # transformers copies remote code into HF_MODULES_CACHE and puts it on sys.path: keep both inside tmp_path
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = tmp_path / "florence-with-code"
    shutil.copytree(tiny_models["florence2"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomFlorence2"}
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "remote-code-ran"
    (folder / "modeling_custom.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import Florence2ForConditionalGeneration\n\n\n"
        "class CustomFlorence2(Florence2ForConditionalGeneration):\n"
        "    pass\n"
    )
    return folder


def test_checkpoint_that_does_not_fit_the_native_class_is_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """E.g. a remote-code Florence-2 loaded without --trust-remote-code: refused, never captioned with random weights."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "renamed"
    shutil.copytree(tiny_models["blip"], folder)
    weights = load_file(folder / "model.safetensors")
    save_file({f"other_layout.{k}": v for k, v in weights.items()}, folder / "model.safetensors")
    photos = tmp_path / "p"
    photos.mkdir()
    Image.new("RGB", (32, 32)).save(photos / "x.png")
    with pytest.raises(LoraforgeError, match="weights missing") as info:
        caption_dataset(photos, captioner="blip", model=str(folder))
    assert "--trust-remote-code" in (info.value.hint or "")


def test_device_and_dtype_choice() -> None:
    import torch

    from orchestrator.captions.device import pick_device, pick_dtype

    assert pick_dtype("cpu") == torch.float32
    if torch.cuda.is_available():
        assert pick_device("auto") == "cuda"
        assert pick_dtype("cuda") in (torch.bfloat16, torch.float16)
    else:
        assert pick_device("auto") in ("mps", "cpu")
        with pytest.raises(LoraforgeError, match="no CUDA GPU"):
            pick_device("cuda")
    assert pick_device("cpu") == "cpu"


def test_remote_code_never_runs_without_the_flag(remote_code_model: Path, photos: Path) -> None:
    marker = remote_code_model.parent / "remote-code-ran"
    result = caption_dataset(photos, captioner="florence2", model=str(remote_code_model), trigger="x")
    assert result.written == 3  # the native classes loaded it
    assert not marker.exists()
    result = caption_dataset(
        photos, captioner="florence2", model=str(remote_code_model), mode="overwrite", trust_remote_code=True
    )
    assert result.written == 3
    assert marker.read_text() == "ran"  # only now, because the user asked


def test_cli_caption_with_a_local_model(tiny_models: dict[str, Path], photos: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    argv = ["caption", str(photos), "-c", "blip", "--model", str(tiny_models["blip"]), "--trigger", "ohwx person"]
    assert main([*argv, "--batch-size", "3", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "3 captioned" in err and "skipped" in err and "broken.jpg" in err
