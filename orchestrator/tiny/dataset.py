"""A small generated dataset: coloured shapes drawn with PIL on plain backgrounds, each with a .txt caption.

Nothing third-party is shipped: every image is drawn here, deterministically from the seed.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 200), "yellow": (220, 200, 40)}
BACKGROUNDS = {"light": (235, 235, 230), "dark": (30, 30, 40)}
SHAPES = ("circle", "square", "triangle")


def make_dataset(folder: Path, *, count: int = 6, size: int = 128, seed: int = 0, captions: bool = True) -> Path:
    """Write ``count`` PNGs (and, unless ``captions`` is False, ``photo of a <colour> <shape> ...`` captions)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(count):
        colour = list(COLOURS)[i % len(COLOURS)]
        shape = SHAPES[i % len(SHAPES)]
        background = list(BACKGROUNDS)[(i // 2) % len(BACKGROUNDS)]
        image = Image.new("RGB", (size, size), BACKGROUNDS[background])
        draw = ImageDraw.Draw(image)
        margin = rng.randint(size // 8, size // 4)
        box = (margin, margin, size - margin, size - margin)
        if shape == "circle":
            draw.ellipse(box, fill=COLOURS[colour])
        elif shape == "square":
            draw.rectangle(box, fill=COLOURS[colour])
        else:
            draw.polygon(
                [(size // 2, margin), (margin, size - margin), (size - margin, size - margin)], COLOURS[colour]
            )
        stem = folder / f"shape_{i:02d}"
        image.save(stem.with_suffix(".png"))
        if captions:
            stem.with_suffix(".txt").write_text(f"a {colour} {shape} on a {background} background", encoding="utf-8")
    return folder
