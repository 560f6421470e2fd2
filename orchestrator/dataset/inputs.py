"""Where the photos come from: a folder (recursive, symlink loops tolerated) or a .zip (extracted safely)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from orchestrator.errors import LoraforgeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".avif", ".heic", ".heif", ".tif", ".tiff", ".bmp", ".gif"}
CAPTION_SUFFIXES = (".txt", ".caption")
MAX_ZIP_BYTES = 20 * 1024**3


def list_candidates(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every file under ``root`` that looks like an image (by suffix), plus files skipped at this stage."""
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    seen_dirs: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        try:
            stat = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        key = (stat.st_dev, stat.st_ino)
        if key in seen_dirs:  # a symlink loop (or a folder linked twice): walk it once
            dirs[:] = []
            continue
        seen_dirs.add(key)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith("."):
                continue
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                if not path.exists():
                    skipped.append((path, "broken symlink: the file it points to does not exist"))
                else:
                    found.append(path)
            elif suffix not in CAPTION_SUFFIXES:
                skipped.append((path, f"not an image ({suffix or 'no extension'})"))
    return found, skipped


def extract_zip(archive: Path, target: Path) -> tuple[Path, list[tuple[Path, str]]]:
    """Extract ``archive`` into ``target``; members that would escape it (``../``, absolute paths) are refused."""
    refused: list[tuple[Path, str]] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            total = sum(info.file_size for info in zf.infolist())
            if total > MAX_ZIP_BYTES:
                raise LoraforgeError(
                    f"{archive} unpacks to {total / 1e9:.1f} GB", "unzip it yourself and pass the folder"
                )
            root = target.resolve()
            for info in zf.infolist():
                dest = (root / info.filename).resolve()
                if info.filename.startswith("/") or not dest.is_relative_to(root):
                    refused.append((Path(info.filename), "zip member would be written outside the target folder"))
                    continue
                if info.is_dir():
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, dest.open("wb") as out:
                    out.write(src.read())
    except zipfile.BadZipFile:
        raise LoraforgeError(
            f"{archive} is not a valid .zip file", "re-create the archive or pass the folder"
        ) from None
    return target, refused
