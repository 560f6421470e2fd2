"""Image quality measures: sharpness, perceptual hash, faces. Pure functions of an RGB image."""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image

BLUR_THRESHOLD = 60.0  # variance of the Laplacian on a 512-px grey copy; sharp photos score in the hundreds
MAX_ASPECT = 2.5


def grey(image: Image.Image, side: int = 512) -> np.ndarray:
    small = image.convert("L")
    if max(small.size) > side:
        small.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32)


def sharpness(grey_pixels: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low on blurry images, high on sharp ones."""
    g = grey_pixels
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var())


@cache
def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    matrix = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


def phash(image: Image.Image | np.ndarray) -> int:
    """64-bit perceptual hash: the signs of the lowest 8x8 DCT frequencies of a 32x32 grey copy vs their median."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8), "L")
    pixels = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    d = _dct_matrix(32)
    low = (d @ pixels @ d.T)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int("".join("1" if b else "0" for b in bits), 2)



@cache
def _face_cascade():  # type: ignore[no-untyped-def]
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def faces(image: Image.Image) -> list[tuple[int, int, int, int]]:
    """Frontal faces as (left, top, width, height) in the image's pixels, largest first. OpenCV's bundled Haar
    cascade: offline, no download, ~100 ms on a 512-px copy."""
    scale = 512 / max(image.size)
    small = (
        image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale)))) if scale < 1 else image
    )
    scale = min(scale, 1.0)
    pixels = np.asarray(small.convert("L"))
    found = _face_cascade().detectMultiScale(pixels, scaleFactor=1.1, minNeighbors=6, minSize=(32, 32))
    boxes = [tuple(int(v / scale) for v in box) for box in (found if len(found) else [])]
    return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)  # type: ignore[return-value]


def significant_faces(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Faces at least a third the size of the largest: background passers-by don't make a photo 'several people'."""
    if not boxes:
        return []
    largest = boxes[0][2] * boxes[0][3]
    return [b for b in boxes if b[2] * b[3] * 9 >= largest]
