"""A dataset on disk: images (recursively, hidden folders skipped) and their ``.txt`` caption sidecars."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import LoraforgeError

if TYPE_CHECKING:
    from PIL.Image import Image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif", ".heic"})
DECODE_SIDE = 1024  # JPEGs are decoded at the smallest 1/2^k scale still at least this big
CAPTION_SUFFIX = ".txt"  # what both backends read (kohya caption_extension=".txt")


def find_images(dataset: Path) -> list[Path]:
    if not dataset.is_dir():
        raise LoraforgeError(
            f"dataset folder {str(dataset)!r} does not exist" if not dataset.exists() else f"{dataset} is not a folder",
            "pass the folder holding the images (e.g. the output of `loraforge prep`)",
        )
    found: list[Path] = []
    for root, dirs, names in os.walk(dataset):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / n for n in sorted(names) if Path(n).suffix.lower() in IMAGE_SUFFIXES]
    return found


def caption_path(image: Path) -> Path:
    return image.with_suffix(CAPTION_SUFFIX)


def read_caption(image: Path) -> str | None:
    """The existing caption, or None when there is none (a blank file counts as none)."""
    path = caption_path(image)
    try:
        text = path.read_text(encoding="utf-8-sig").strip()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise LoraforgeError(f"caption {path} is not UTF-8 text ({exc.reason})", "re-save it as UTF-8") from exc
    return text or None


def one_line(text: str) -> str:
    """Captions are one line (trainers read the whole file); anything else the user typed is kept as typed."""
    return re.sub(r"[\r\n]+", " ", text).strip()


def write_caption(image: Path, text: str) -> None:
    """Atomic: a crash never leaves half a caption. One line, UTF-8, ending in a newline."""
    path = caption_path(image)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(one_line(text) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def open_image(path: Path) -> tuple[Image | None, str | None]:
    """(RGB image, None), or (None, reason) for a file that cannot be decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.format == "JPEG":  # decode big photos at a reduced scale: captioners look at <= 768 px anyway
                im.draft("RGB", (DECODE_SIDE, DECODE_SIDE))
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "P", "PA"):
                im = im.convert("RGBA")
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, im)
            elif im.mode.startswith("I;16") or im.mode == "I":
                im = im.convert("I").point(lambda v: v * (1 / 257)).convert("L")  # 16-bit grey: scale, do not clip
            return im.convert("RGB"), None
    except UnidentifiedImageError:
        return None, "not an image Pillow can read"
    except PermissionError:
        return None, "permission denied"
    except (OSError, SyntaxError, ValueError) as exc:  # truncated data, broken headers
        return None, f"cannot decode: {exc}"
    except Image.DecompressionBombError as exc:
        return None, f"too large: {exc}"
