"""caption_dataset on real image files with the template captioner: modes, trigger reruns, unicode, bad images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from orchestrator.captions import caption_dataset
from orchestrator.captions.files import caption_path, find_images
from orchestrator.cli import main
from orchestrator.errors import LoraforgeError


def _photo(path: Path, colour: tuple[int, int, int] = (200, 80, 40), size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "dataset"
    _photo(root / "one.jpg")
    _photo(root / "two.png", (10, 200, 10))
    _photo(root / "10_ohwx person" / "three.webp", (0, 0, 255))  # kohya's repeats_name sub-folder
    _photo(root / "unicode ünïcödé 写真.jpg")
    return root


def _captions(root: Path) -> dict[str, str]:
    return {
        img.relative_to(root).as_posix(): caption_path(img).read_text(encoding="utf-8")
        for img in find_images(root)
        if caption_path(img).exists()
    }


def test_template_writes_one_caption_per_image(dataset: Path) -> None:
    result = caption_dataset(dataset, captioner="template", trigger="ohwx person")
    assert (result.images, result.written, result.kept, result.skipped) == (4, 4, 0, [])
    assert set(_captions(dataset).values()) == {"photo of ohwx person\n"}
    assert (dataset / "10_ohwx person" / "three.txt").is_file()


def test_rerun_never_duplicates_the_trigger(dataset: Path) -> None:
    caption_path(dataset / "one.jpg").write_text("a red square", encoding="utf-8")
    first = caption_dataset(dataset, captioner="template", trigger="ohwx person")
    assert (first.kept, first.trigger_added, first.written) == (1, 1, 3)
    before = _captions(dataset)
    assert before["one.jpg"] == "ohwx person, a red square\n"
    second = caption_dataset(dataset, captioner="template", trigger="ohwx person")
    assert (second.kept, second.trigger_added, second.written) == (4, 0, 0)
    assert _captions(dataset) == before


def test_keep_leaves_captions_that_have_the_trigger(dataset: Path) -> None:
    own = caption_path(dataset / "two.png")
    own.write_text("close-up of OHWX person, smiling\n", encoding="utf-8")
    stamp = own.stat().st_mtime_ns
    caption_dataset(dataset, captioner="template", trigger="ohwx person", mode="keep")
    assert own.read_text(encoding="utf-8") == "close-up of OHWX person, smiling\n"
    assert own.stat().st_mtime_ns == stamp  # not even rewritten


def test_overwrite_replaces_existing_captions(dataset: Path) -> None:
    caption_path(dataset / "one.jpg").write_text("old caption", encoding="utf-8")
    result = caption_dataset(dataset, captioner="template", trigger="sks dog", mode="overwrite")
    assert (result.written, result.kept) == (4, 0)
    assert _captions(dataset)["one.jpg"] == "photo of sks dog\n"


def test_unicode_trigger_template_and_separator(dataset: Path) -> None:
    caption_path(dataset / "one.jpg").write_text("женщина в шляпе 🎩", encoding="utf-8")
    caption_dataset(dataset, captioner="template", trigger="sks 人物", template="照片 {trigger}", separator="，")
    got = _captions(dataset)
    assert got["one.jpg"] == "sks 人物，женщина в шляпе 🎩\n"
    assert got["unicode ünïcödé 写真.jpg"] == "照片 sks 人物\n"


def test_style_needs_no_trigger(dataset: Path) -> None:
    caption_path(dataset / "one.jpg").write_text("an oil painting of a harbour", encoding="utf-8")
    caption_dataset(dataset, captioner="template", template="an oil painting", trigger=None)
    got = _captions(dataset)
    assert got["one.jpg"] == "an oil painting of a harbour"  # kept as written, not even rewritten
    assert got["two.png"] == "an oil painting\n"


def test_template_without_trigger_is_a_clear_error(dataset: Path) -> None:
    with pytest.raises(LoraforgeError, match="needs a trigger") as info:
        caption_dataset(dataset, captioner="template")
    assert "--trigger" in (info.value.hint or "")


def test_unreadable_images_are_skipped_with_a_reason(dataset: Path) -> None:
    (dataset / "empty.jpg").write_bytes(b"")
    (dataset / "text.png").write_text("this is not a picture")
    whole = dataset / "big.jpg"
    _photo(whole, size=(256, 256))
    (dataset / "truncated.jpg").write_bytes(whole.read_bytes()[:300])
    locked = _photo(dataset / "locked.jpg")
    locked.chmod(0)
    try:
        result = caption_dataset(dataset, captioner="template", trigger="ohwx")
    finally:
        locked.chmod(0o644)
    reasons = {p.name: reason for p, reason in result.skipped}
    assert set(reasons) >= {"empty.jpg", "text.png", "truncated.jpg"}
    assert "not an image" in reasons["text.png"]
    assert "truncated" in reasons["truncated.jpg"] or "cannot decode" in reasons["truncated.jpg"]
    if os.geteuid() != 0:  # root reads any file
        assert reasons["locked.jpg"] == "permission denied"
    assert result.written == 5 + (os.geteuid() == 0)  # the 4 good images and big.jpg (and locked.jpg for root)
    assert not caption_path(dataset / "empty.jpg").exists()


def test_bad_arguments_are_user_errors(tmp_path: Path, dataset: Path) -> None:
    with pytest.raises(LoraforgeError, match="does not exist"):
        caption_dataset(tmp_path / "missing", captioner="template", trigger="x")
    with pytest.raises(LoraforgeError, match="unknown captioner 'gpt'"):
        caption_dataset(dataset, captioner="gpt")
    with pytest.raises(LoraforgeError, match="batch size"):
        caption_dataset(dataset, captioner="template", trigger="x", batch_size=0)


def test_progress_reports_every_image(dataset: Path) -> None:
    seen: list[tuple[int, int]] = []
    caption_dataset(
        dataset, captioner="template", trigger="x", batch_size=3, on_progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1] == (4, 4)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_long_captions_are_flagged(dataset: Path) -> None:
    caption_path(dataset / "one.jpg").write_text(", ".join(["a detailed description of a man"] * 15), encoding="utf-8")
    result = caption_dataset(dataset, captioner="template", trigger="x")
    assert [p.name for p, _ in result.too_long] == ["one.jpg"]


def test_cli_caption_template(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["caption", str(dataset), "--captioner", "template", "--trigger", "ohwx person", "--overwrite"]) == 0
    assert "4 captioned" in capsys.readouterr().err
    assert set(_captions(dataset).values()) == {"photo of ohwx person\n"}
    assert (
        main(["caption", str(dataset), "--captioner", "template", "--overwrite"]) == 2
    )  # no trigger: a message, not a traceback
    assert "needs a trigger" in capsys.readouterr().err
