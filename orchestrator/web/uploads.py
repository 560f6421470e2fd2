"""Uploads for a new LoRA: photos, their captions, or zips of them, into a draft's photos/ folder, within caps.

- Each request carries one file as its raw body (``PUT /api/drafts/ID/files/NAME``): no multipart parsing, and the
  size is known from ``Content-Length`` before a byte is read, so an oversized file is refused at once.
- A file is kept only if its first bytes are an image format prep reads (JPEG, PNG, WebP, GIF, BMP, TIFF,
  HEIC/HEIF/AVIF) or a zip; a caption (.txt, .caption) beside a photo must be UTF-8 text. The suffix must say
  the same kind.
- A zip is unpacked by prep's own ``extract_zip``, which refuses members that would escape the folder, encrypted
  members and decompression bombs; any member it refuses refuses the whole upload. Its unpacked size and member
  count count against the draft's caps before anything is unpacked.
- Per draft: at most ``Limits.files`` files and ``Limits.total_bytes`` bytes, unpacked.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orchestrator.dataset.inputs import CAPTION_SUFFIXES, IMAGE_SUFFIXES, extract_zip
from orchestrator.errors import LoraforgeError
from orchestrator.web.paths import check_name
from orchestrator.web.responses import HttpError

CHUNK = 1024 * 1024
MAX_CAPTION_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    file_bytes: int = 64 * 1024**2  # one photo
    zip_bytes: int = 2 * 1024**3  # one zip, as uploaded
    total_bytes: int = 8 * 1024**3  # one draft, unpacked
    files: int = 2000  # one draft, unpacked


def sniff(head: bytes) -> str | None:
    """The file type its first bytes say, among those an upload may be."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"heim", b"mif1", b"msf1", b"avif", b"avis"):
        return "heif"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    return None


def usage(photos: Path) -> tuple[int, int]:
    """Files and bytes already in a draft's photos/ folder."""
    count = size = 0
    for folder, _, files in os.walk(photos):
        for name in files:
            count += 1
            size += os.lstat(os.path.join(folder, name)).st_size
    return count, size


def receive(photos: Path, name: str, body: IO[bytes], length: int, limits: Limits) -> dict[str, Any]:
    """Store one uploaded file under ``photos``; what was kept (a zip: the files it held)."""
    name = check_name(name)
    suffix = Path(name).suffix.lower()
    if suffix in CAPTION_SUFFIXES:
        kind, cap = "caption", MAX_CAPTION_BYTES
    elif suffix == ".zip":
        kind, cap = "zip", limits.zip_bytes
    elif suffix in IMAGE_SUFFIXES:
        kind, cap = "image", limits.file_bytes
    else:
        raise HttpError(415, f"{name}: not a photo, a caption or a zip", f"photos: {', '.join(sorted(IMAGE_SUFFIXES))}")
    if length > cap:
        raise HttpError(413, f"{name} is {length / 1024**2:.1f} MiB; a {kind} may be at most {cap / 1024**2:.0f} MiB")
    count, used = usage(photos)
    if count + 1 > limits.files or used + length > limits.total_bytes:
        raise HttpError(413, f"this upload would pass the caps of {limits.files} files, {_gib(limits.total_bytes)}")
    photos.mkdir(parents=True, exist_ok=True)
    incoming = photos.parent / "incoming"
    incoming.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=incoming, delete=False) as out:
        temp = Path(out.name)
        try:
            head = _copy(body, out, length)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    try:
        found = "caption" if kind == "caption" else sniff(head)
        if kind == "caption":
            _check_text(temp, name)
        elif found is None or (found == "zip") != (kind == "zip"):
            raise HttpError(415, f"{name} is not {'a zip' if kind == 'zip' else 'an image'} (its content says so)")
        if kind == "zip":
            return {"name": name, "kind": "zip", "files": _unzip(temp, photos / Path(name).stem, limits, count, used)}
        temp.replace(photos / name)
        return {"name": name, "kind": kind, "files": [name]}
    finally:
        temp.unlink(missing_ok=True)


def _copy(body: IO[bytes], out: IO[bytes], length: int) -> bytes:
    head = b""
    left = length
    while left > 0:
        chunk = body.read(min(CHUNK, left))
        if not chunk:
            raise HttpError(400, "the upload ended early")
        if len(head) < 16:
            head += chunk[:16]
        out.write(chunk)
        left -= len(chunk)
    return head


def _check_text(path: Path, name: str) -> None:
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(415, f"{name} is not UTF-8 text: a caption must be") from None


def _unzip(archive: Path, target: Path, limits: Limits, count: int, used: int) -> list[str]:
    """Prep's own zip rules, under the draft's caps; all or nothing."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [info for info in zf.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise HttpError(422, f"{archive.name}: not a readable zip ({exc})") from None
    unpacked = sum(info.file_size for info in members)
    if count + len(members) > limits.files or used + unpacked > limits.total_bytes:
        raise HttpError(
            413,
            f"the zip holds {len(members)} files, {unpacked / 1024**2:.0f} MiB unpacked: over the caps of "
            f"{limits.files} files, {_gib(limits.total_bytes)} per upload set",
        )
    if target.exists():
        shutil.rmtree(target)
    try:
        _, refused = extract_zip(archive, target)
    except LoraforgeError as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise HttpError(422, exc.message, exc.hint) from None
    if refused:
        shutil.rmtree(target, ignore_errors=True)
        shown = "; ".join(f"{path}: {why}" for path, why in refused[:3])
        raise HttpError(422, f"zip refused ({len(refused)} member(s) unsafe): {shown}")
    return sorted(p.relative_to(target.parent).as_posix() for p in target.rglob("*") if p.is_file())


def _gib(size: int) -> str:
    return f"{size / 1024**3:.0f} GiB"
