"""Real photographs for journey tests: scikit-image's sample images (they ship with the dev extra, offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

# 18 of scikit-image's bundled samples: photographs, micrographs, textures, a drawing; colour and grey.
NAMES = (
    "astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "retina",
    "rocket", "stereo_motorcycle",
)  # fmt: skip


def sample_photos(folder: Path, names: tuple[str, ...] = NAMES) -> Path:
    """Write each sample as a JPEG in ``folder`` (created); skips the test where scikit-image is missing."""
    data = pytest.importorskip("skimage.data", reason="pip install -e '.[dev]' (scikit-image ships the photos)")
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        image = getattr(data, name)()
        if isinstance(image, tuple):  # stereo pairs
            image = image[0]
        Image.fromarray(image).convert("RGB").save(folder / f"{name}.jpg", quality=92)
    return folder
