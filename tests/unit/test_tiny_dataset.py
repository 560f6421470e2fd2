"""The drawn demo dataset: deterministic, valid images, captions only when asked."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from orchestrator.tiny.dataset import make_dataset


def test_drawn_dataset_is_deterministic_with_captions(tmp_path: Path) -> None:
    a = make_dataset(tmp_path / "a", count=6, size=96, seed=3)
    b = make_dataset(tmp_path / "b", count=6, size=96, seed=3)
    images = sorted(a.glob("*.png"))
    assert len(images) == 6
    for image in images:
        assert image.read_bytes() == (b / image.name).read_bytes()
        with Image.open(image) as picture:
            assert picture.size == (96, 96) and picture.mode == "RGB"
            assert len(picture.getcolors(maxcolors=1 << 16) or []) >= 2  # a shape on a background, not a blank square
        caption = image.with_suffix(".txt").read_text(encoding="utf-8")
        assert caption.startswith("a ") and "background" in caption


def test_photos_without_captions(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "photos", count=3, captions=False)
    assert len(list(folder.glob("*.png"))) == 3 and not list(folder.glob("*.txt"))
