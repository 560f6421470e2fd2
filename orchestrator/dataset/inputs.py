"""Where the photos come from: a folder (recursive, symlink loops tolerated) or a .zip (extracted safely)."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

from orchestrator.errors import LoraforgeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".avif", ".heic", ".heif", ".tif", ".tiff", ".bmp", ".gif"}
CAPTION_SUFFIXES = (".txt", ".caption")
MAX_ZIP_BYTES = 20 * 1024**3  # everything a zip may unpack to
MAX_ZIP_MEMBERS = 20_000
MAX_MEMBER_BYTES = 512 * 1024**2  # a 100-megapixel TIFF is about 300 MB
MAX_RATIO = 200  # photos barely compress; text and bombs do (a 2 GiB entry of zeros compresses about 1000:1)
SUPPORTED_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
CHUNK = 1024 * 1024


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
                elif not path.is_file():  # a named pipe or device would block or never end when read
                    skipped.append((path, "not a regular file"))
                else:
                    found.append(path)
            elif suffix not in CAPTION_SUFFIXES:
                skipped.append((path, f"not an image ({suffix or 'no extension'})"))
    return found, skipped


def extract_zip(archive: Path, target: Path) -> tuple[Path, list[tuple[Path, str]]]:
    """Extract ``archive`` into ``target``, streaming each member to disk (never whole in memory) under caps on the
    total size, the member count and each member's compression ratio. A member that cannot or must not be
    extracted (escaping the folder, encrypted, an unsupported method, a decompression bomb, a name that clashes
    with a folder, corrupt data) is refused and reported like any other bad photo; the rest go on."""
    refused: list[tuple[Path, str]] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise LoraforgeError(
                    f"{archive} holds {len(members)} files; loraforge reads at most {MAX_ZIP_MEMBERS}",
                    "unzip it yourself and pass the folder",
                )
            root = target.resolve()
            written = 0
            for info in members:
                why = _refusal(info, root)
                if why is None and written + info.file_size > MAX_ZIP_BYTES:
                    why = f"the archive unpacks to more than {MAX_ZIP_BYTES / 1024**3:.0f} GiB"
                if why is None:
                    why = _extract_member(zf, info, root)
                if why is not None:
                    refused.append((Path(info.filename), why))
                    continue
                written += info.file_size
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise LoraforgeError(
            f"{archive} is not a readable .zip file ({exc})", "re-create the archive or pass the folder"
        ) from None
    return target, refused


def _refusal(info: zipfile.ZipInfo, root: Path) -> str | None:
    """Why a member must not be extracted, from its header alone; None when it may be."""
    name = info.filename
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\0" in name:
        return "zip member with an absolute path: refused"
    if not (root / name).resolve().is_relative_to(root):
        return "zip member would be written outside the target folder: refused"
    if info.is_dir():
        return None
    if info.flag_bits & 0x1:
        return "encrypted zip member: loraforge cannot read it (re-create the archive without a password)"
    if info.compress_type not in SUPPORTED_METHODS:
        return f"zip compression method {info.compress_type} is not supported (re-create the archive with Deflate)"
    if info.file_size > MAX_MEMBER_BYTES:
        return f"unpacks to {info.file_size / 1024**3:.1f} GiB: larger than any photo ({MAX_MEMBER_BYTES // 1024**2} MiB at most)"
    if info.file_size > 1024**2 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        return f"compressed {info.file_size // max(info.compress_size, 1)}:1, a decompression bomb, not a photo"
    return None


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, root: Path) -> str | None:
    """Stream one member to its place under ``root``; why it failed (the partial file removed), or None."""
    if info.is_dir():
        return None
    dest = root / info.filename
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        return "its folder clashes with a file of the same name in the archive"
    if dest.is_dir():
        return "clashes with a folder of the same name in the archive"
    try:
        with zf.open(info) as src, dest.open("wb") as out:
            left = info.file_size
            while chunk := src.read(min(CHUNK, left + 1)):
                left -= len(chunk)
                if left < 0:
                    raise zipfile.BadZipFile("more data than its header says")
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
        dest.unlink(missing_ok=True)
        return f"corrupt zip member: {exc}"
    except IsADirectoryError:
        return "clashes with a folder of the same name in the archive"
    return None
