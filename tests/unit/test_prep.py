"""Dataset preparation on real files: a corpus of bad inputs, real face photos, duplicates, blur, the cache."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from orchestrator.dataset.prep import prepare_dataset

skimage_data = pytest.importorskip("skimage.data", reason="pip install -e '.[dev]' (scikit-image ships test photos)")


def textured(seed: int, size: tuple[int, int] = (640, 640)) -> Image.Image:
    """A sharp, distinctive picture: random shapes over noise (no two seeds alike)."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        draw.rectangle(
            [x, y, x + int(rng.integers(20, 200)), y + int(rng.integers(20, 200))],
            fill=tuple(int(v) for v in rng.integers(0, 255, 3)),
        )
    return image


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*"), key=str):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
            digest.update(oct(path.stat().st_mode).encode())
    return digest.hexdigest()


def build_corpus(src: Path) -> tuple[set[str], dict[str, str]]:
    """Good files (by name) that must be accepted, and bad files with a word their reason must contain."""
    src.mkdir()
    good: set[str] = set()
    bad: dict[str, str] = {}

    def keep(name: str, image: Image.Image, **save: object) -> None:
        image.save(src / name, **save)
        good.add(name)

    keep("plain.jpg", textured(1), quality=92)
    keep("name with spaces.png", textured(2))
    keep('quote\'s "double".jpg', textured(3))
    keep("ünïcødé 写真.webp", textured(4))
    keep("cmyk.jpg", textured(5).convert("CMYK"))
    keep("palette-transparent.png", textured(6).convert("P"), transparency=0)
    keep("rgba.png", textured(7).convert("RGBA"))
    sixteen = (np.asarray(textured(8).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    keep("grey16.png", Image.fromarray(sixteen))
    frames = [textured(9), textured(10)]
    frames[0].save(src / "animated.gif", save_all=True, append_images=frames[1:])
    good.add("animated.gif")
    keep("tiff.tif", textured(11))
    keep("bitmap.bmp", textured(12))
    rotated = textured(13, (800, 640))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: stored landscape, shown portrait
    rotated.save(src / "exif-rotated.jpg", exif=exif)
    good.add("exif-rotated.jpg")
    (src / "nested" / "deeper").mkdir(parents=True)
    keep("nested/deeper/inside.png", textured(14))

    (src / "zero.jpg").write_bytes(b"")
    bad["zero.jpg"] = "not an image"
    buffer = io.BytesIO()
    textured(20).save(buffer, format="JPEG")
    (src / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    bad["truncated.jpg"] = "truncated"
    (src / "text.jpg").write_text("this is not a photo")
    bad["text.jpg"] = "not an image"
    bomb = Image.new("1", (12000, 12000))
    bomb.save(src / "bomb.png", optimize=True)
    bad["bomb.png"] = "pixels"
    textured(21, (100, 100)).save(src / "tiny.png")
    bad["tiny.png"] = "too small"
    textured(22, (1600, 400)).save(src / "panorama.png")
    bad["panorama.png"] = "aspect ratio"
    textured(23).filter(ImageFilter.GaussianBlur(6)).save(src / "blurry.png")
    bad["blurry.png"] = "blurry"
    textured(1).resize((600, 600)).save(src / "plain-copy.jpg", quality=80)
    bad["plain-copy.jpg"] = "near-duplicate"
    (src / "loop").symlink_to(src, target_is_directory=True)  # a symlink loop: walked once
    (src / "dangling.png").symlink_to(src / "missing.png")
    bad["dangling.png"] = "broken symlink"
    (src / "notes.pdf").write_bytes(b"%PDF-1.4")
    bad["notes.pdf"] = "not an image"
    (src / "fake.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    bad["fake.heic"] = "not an image"
    Image.new("RGB", (640, 640), (128, 128, 128)).save(src / "flat.png")
    bad["flat.png"] = "blurry"
    if os.geteuid() != 0:  # root reads a chmod 000 file anyway: that case is its own test, skipped as root
        unreadable = src / "unreadable.png"
        textured(24).save(unreadable)
        unreadable.chmod(0)
        bad["unreadable.png"] = "permission"
    (src / "caption-only.txt").write_text("a caption without an image")
    (src / "plain.txt").write_text('ohwx "person", with a caption\nover two lines')
    return good, bad


def test_bad_input_corpus_every_file_reported_good_ones_processed_source_untouched(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    good, bad = build_corpus(src)
    assert len(bad) + len(good) >= 24 and len(bad) >= 12  # plus the symlink loop and a caption with no image
    before = tree_digest(src)
    result = prepare_dataset(src, tmp_path / "out", subject="object", size=512, crop="none", workers=2)
    assert tree_digest(src) == before
    verdicts = {}
    for entry in result.entries:
        name = (
            str(Path(entry["source"]).relative_to(src))
            if Path(entry["source"]).is_relative_to(src)
            else entry["source"]
        )
        verdicts[name] = entry
    for name in good:
        assert verdicts[name]["verdict"] == "accepted", (name, verdicts[name])
        out = Path(verdicts[name]["output"])
        with Image.open(out) as image:
            assert image.mode == "RGB" and image.width % 64 == 0 and image.height % 64 == 0
    for name, word in bad.items():
        reasons = " ".join(verdicts[name]["reasons"])
        assert verdicts[name]["verdict"] != "accepted" and word in reasons, (name, verdicts[name])
    # orientation applied, 16-bit greys scaled (not clipped to white), caption carried over byte for byte
    with Image.open(verdicts["exif-rotated.jpg"]["output"]) as image:
        assert image.height > image.width
    with Image.open(verdicts["grey16.png"]["output"]) as image:
        assert 60 < np.asarray(image).mean() < 200
    assert Path(verdicts["plain.txt" if "plain.txt" in verdicts else "plain.jpg"]["output"]).with_suffix(
        ".txt"
    ).read_text() == ('ohwx "person", with a caption\nover two lines')
    manifest = json.loads(result.manifest_path.read_text())
    assert len(manifest["images"]) == len(result.entries)
    assert "blurry" in result.report_path.read_text()


def test_zip_input_refuses_members_escaping_the_target(tmp_path: Path) -> None:
    archive = tmp_path / "photos.zip"
    buffer = io.BytesIO()
    textured(30).save(buffer, format="PNG")
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good/one.png", buffer.getvalue())
        zf.writestr("../escape.png", buffer.getvalue())
    result = prepare_dataset(archive, tmp_path / "out", subject="object", size=512)
    assert result.accepted == 1
    assert any("outside the target folder" in reason for _, reason in result.rejected)
    assert not (tmp_path / "escape.png").exists()


def test_real_face_found_and_inside_the_crop_and_no_face_rejected(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(src / "astronaut.png")
    Image.fromarray(skimage_data.coffee()).save(src / "coffee.png")
    result = prepare_dataset(src, tmp_path / "out", subject="face", size=512)
    entries = {Path(e["source"]).name: e for e in result.entries}
    astronaut = entries["astronaut.png"]
    assert astronaut["verdict"] == "accepted"
    (fx, fy, fw, fh) = astronaut["faces"][0]
    left, top, right, bottom = astronaut["crop_box"]
    assert left <= fx and top <= fy and fx + fw <= right and fy + fh <= bottom
    assert entries["coffee.png"]["verdict"] == "rejected" and entries["coffee.png"]["reasons"] == ["no face found"]
    assert "add" in result.advice[0]  # 1 image: far below the 15-30 sweet spot


def test_rerun_over_an_unchanged_folder_does_no_image_work(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(6):
        textured(40 + i).save(src / f"{i}.png")
    first = prepare_dataset(src, tmp_path / "out", subject="style", size=512)
    second = prepare_dataset(src, tmp_path / "out", subject="style", size=512)
    assert (first.processed, second.processed) == (6, 0)
    assert second.accepted == first.accepted == 6
    (src / "0.png").unlink()  # a photo removed: its prepared image goes too
    third = prepare_dataset(src, tmp_path / "out", subject="style", size=512)
    assert third.processed == 0 and third.accepted == 5
    assert len(list((tmp_path / "out").glob("*.jpg"))) == 5


def test_output_inside_source_is_refused(tmp_path: Path) -> None:
    from orchestrator.errors import LoraforgeError

    (tmp_path / "photos").mkdir()
    with pytest.raises(LoraforgeError, match="inside the photo folder"):
        prepare_dataset(tmp_path / "photos", tmp_path / "photos" / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: chmod 000 does not stop root from reading a file")
def test_unreadable_file_is_reported_with_permission_reason(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    textured(60).save(src / "ok.png")
    textured(61).save(src / "locked.png")
    (src / "locked.png").chmod(0)
    try:
        result = prepare_dataset(src, tmp_path / "out", subject="object", size=512)
    finally:
        (src / "locked.png").chmod(0o644)
    assert result.accepted == 1
    assert any("permission" in reason for source, reason in result.rejected if "locked" in str(source))


def test_center_crop_is_the_default_for_objects_and_cli_writes_json(tmp_path: Path) -> None:
    import subprocess
    import sys

    src = tmp_path / "photos"
    src.mkdir()
    textured(70, (800, 600)).save(src / "wide.png")
    result = prepare_dataset(src, tmp_path / "out", subject="object", size=512)
    (entry,) = result.entries
    with Image.open(entry["output"]) as image:
        assert image.size == (512, 512)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "prep",
            str(src),
            "-o",
            str(tmp_path / "cli"),
            "--subject",
            "style",
            "--size",
            "256",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["accepted"] == 1 and Path(summary["report"]).is_file()


def test_background_removal_with_a_tiny_local_onnx_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rembg's real session code on a one-node ONNX model (mask = channel mean), built here: nothing downloaded."""
    pytest.importorskip("rembg", reason="pip install -e '.[bg]'")
    onnx = pytest.importorskip("onnx", reason="pip install -e '.[dev]'")
    from onnx import TensorProto, helper

    home = tmp_path / "u2net"  # rembg accepts custom models only inside U2NET_HOME
    home.mkdir()
    monkeypatch.setenv("U2NET_HOME", str(home))
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input", "axes"], ["mask"], keepdims=1)],
        "tiny-mask",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 320, 320])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, home / "tiny.onnx")
    src = tmp_path / "photos"
    src.mkdir()
    photo = textured(80)
    draw = ImageDraw.Draw(photo)
    draw.rectangle([0, 0, 639, 639], fill=(0, 0, 0))
    draw.rectangle([160, 160, 480, 480], fill=(250, 250, 250))
    draw.line([160, 320, 480, 320], fill=(0, 0, 0), width=9)  # enough edges to pass the blur check
    for i in range(0, 640, 16):
        draw.line([160 + i // 2, 160, 160 + i // 2, 480], fill=(20, 20, 20), width=2)
    photo.save(src / "subject.png")
    result = prepare_dataset(
        src,
        tmp_path / "out",
        subject="object",
        size=512,
        crop="none",
        remove_background=True,
        background_model=str(home / "tiny.onnx"),
        workers=1,
    )
    (entry,) = result.entries
    assert entry["verdict"] == "accepted", entry
    with Image.open(entry["output"]) as image:
        pixels = np.asarray(image)
    assert pixels[:40, :40].mean() > 240  # black background cut away and flattened on white


def test_grace_hopper_face_found_and_kept_in_the_crop(tmp_path: Path) -> None:
    cbook = pytest.importorskip("matplotlib.cbook", reason="pip install -e '.[report]' (matplotlib ships the photo)")
    src = tmp_path / "photos"
    src.mkdir()
    with cbook.get_sample_data("grace_hopper.jpg") as photo:
        (src / "grace hopper.jpg").write_bytes(photo.read())
    result = prepare_dataset(src, tmp_path / "out", subject="face", size=512, workers=1)
    (entry,) = result.entries
    assert entry["verdict"] == "accepted", entry
    fx, fy, fw, fh = entry["faces"][0]
    left, top, right, bottom = entry["crop_box"]
    assert left <= fx and top <= fy and fx + fw <= right and fy + fh <= bottom
    with Image.open(entry["output"]) as image:
        assert image.size == (512, 512)


def test_face_and_crop_box_in_original_pixels_when_jpeg_is_decoded_at_reduced_size(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(skimage_data.astronaut()).resize((2048, 2048)).save(src / "big.jpg", quality=92)
    result = prepare_dataset(src, tmp_path / "out", subject="face", size=512, workers=1)
    (entry,) = result.entries
    assert entry["verdict"] == "accepted", entry
    fx, fy, fw, fh = entry["faces"][0]
    left, top, right, bottom = entry["crop_box"]
    assert fw > 300  # the astronaut's face is ~1/6 of the frame: in 2048-px coordinates, not the 512-px draft
    assert left <= fx and top <= fy and fx + fw <= right and fy + fh <= bottom <= 2048
