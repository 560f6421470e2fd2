"""Crop boxes (face-aware or centred) and bucket-friendly output sizes."""

from __future__ import annotations

Box = tuple[int, int, int, int]  # left, top, right, bottom


def center_box(width: int, height: int, aspect: float = 1.0) -> Box:
    if width / height > aspect:
        new_w = round(height * aspect)
        left = (width - new_w) // 2
        return left, 0, left + new_w, height
    new_h = round(width / aspect)
    top = (height - new_h) // 2
    return 0, top, width, top + new_h


def face_box(width: int, height: int, face: tuple[int, int, int, int]) -> Box:
    """The largest square that holds the face with room around it (head and shoulders), centred on the face
    and shifted to stay inside the image."""
    fx, fy, fw, fh = face
    side = min(width, height, max(round(fw * 3.2), round(fh * 3.2)))
    side = max(side, max(fw, fh))
    cx = fx + fw / 2
    cy = fy + fh / 2 + fh * 0.25  # a little below the face centre: shoulders matter more than sky
    left = int(min(max(cx - side / 2, 0), width - side))
    top = int(min(max(cy - side / 2, 0), height - side))
    return left, top, left + side, top + side


def output_size(width: int, height: int, size: int, step: int = 64) -> tuple[int, int]:
    """Scale so the long side is at most ``size`` (never upscale), both sides multiples of ``step``."""
    scale = min(1.0, size / max(width, height))
    w = max(step, int(width * scale) // step * step)
    h = max(step, int(height * scale) // step * step)
    return w, h


def resample():  # type: ignore[no-untyped-def]
    from PIL import Image

    return Image.Resampling.LANCZOS
