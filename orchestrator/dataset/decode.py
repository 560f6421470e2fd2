"""Decoding one photo into an upright RGB image: EXIF orientation, colour modes, size limits, fast JPEG draft.

Every failure becomes a reason string (never an exception that stops the run).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

MAX_PIXELS = 100_000_000  # a 10000 x 10000 photo; larger is a decompression bomb, not a portrait


class DecodeError(Exception):
    """The image cannot be used; the message is the user-facing reason."""


_heif_registered = False


def _register_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:
            pass
        _heif_registered = True


def load_rgb(path: Path, min_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """The photo as upright RGB, decoded at reduced size where the format allows (JPEG draft) but never below
    ``min_side`` on its short side. Returns the image and the original (upright) size."""
    if path.suffix.lower() in (".heic", ".heif"):
        _register_heif()
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise DecodeError(f"{width}x{height} pixels is over the {MAX_PIXELS // 1_000_000} MP safety limit")
            orientation = image.getexif().get(0x0112, 1)
            original = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
            if image.format == "JPEG" and min(width, height) >= 2 * min_side:
                # Decode at 1/2, 1/4 or 1/8 scale in the JPEG decoder itself: several times faster, and the
                # short side stays at least min_side.
                scale = min_side / min(width, height)
                image.draft("RGB", (int(width * scale), int(height * scale)))
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated GIF/WebP: the first frame
            image.load()
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DecodeError("too many pixels: refused as a decompression bomb") from None
    except FileNotFoundError:
        raise DecodeError("file vanished while reading") from None
    except PermissionError:
        raise DecodeError("no permission to read the file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        text = str(exc)
        if "truncated" in text.lower():
            raise DecodeError("truncated file (an incomplete download or copy)") from None
        if "cannot identify image file" in text:
            raise DecodeError("not an image, or a format Pillow cannot read") from None
        raise DecodeError(f"unreadable: {text}") from None
    image = ImageOps.exif_transpose(image)
    return to_rgb(image), original


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency flattened on white and 16-bit greys scaled (Pillow's convert would clip them)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        grey = np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        span = float(array.max() - array.min()) or 1.0
        return Image.fromarray(((array - array.min()) * 255 / span).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if mode in ("RGBA", "LA", "PA") or image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode == "CMYK":
        return image.convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image
