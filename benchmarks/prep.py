"""Dataset preparation throughput: N generated 1024x1024 JPEGs -> 512 px dataset (decode, checks, hash, resize).

    python benchmarks/prep.py [--images 500] [--size 512] [--workers 2]

Prints cold images/s, the warm rerun as a share of cold, and peak RSS of the pool (for N and N/5 images: memory
must not grow with the number of images).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_photos(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    # Photo-like: smooth gradients, shapes and mild sensor noise (pure noise would compress 10x worse than a photo).
    y, x = np.mgrid[0:1024, 0:1024]
    smooth = np.stack([x / 4, y / 4, (x + y) / 8], axis=-1) + rng.normal(0, 6, (1024, 1024, 3))
    base = Image.fromarray(np.clip(smooth, 0, 255).astype(np.uint8))
    for i in range(count):
        image = base.copy()
        draw = ImageDraw.Draw(image)
        for _ in range(8):
            x, y = (int(v) for v in rng.integers(0, 900, 2))
            draw.ellipse([x, y, x + 120, y + 120], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        image.save(folder / f"photo_{i:04d}.jpg", quality=90)


def measure(photos: Path, out: Path, size: int, workers: int) -> tuple[float, int]:
    code = (
        "import sys, time, resource\n"
        "from pathlib import Path\n"
        "from orchestrator.dataset.prep import prepare_dataset\n"
        "t = time.perf_counter()\n"
        f"r = prepare_dataset(Path({str(photos)!r}), Path({str(out)!r}), subject='style', size={size}, crop='none', workers={workers})\n"
        "dt = time.perf_counter() - t\n"
        "peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(dt, peak)\n"
    )
    out_text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out_text[0]), int(out_text[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_photos(root / "photos", args.images)
        cold, peak = measure(root / "photos", root / "out", args.size, args.workers)
        warm, _ = measure(root / "photos", root / "out", args.size, args.workers)
        small = max(1, args.images // 5)
        make_photos(root / "few", small)
        _, peak_small = measure(root / "few", root / "out-few", args.size, args.workers)
        shutil.rmtree(root / "out", ignore_errors=True)
    print(f"cold: {args.images} images in {cold:.2f} s = {args.images / cold:.1f} images/s ({args.workers} workers)")
    print(f"warm rerun: {warm:.2f} s = {100 * warm / cold:.1f}% of cold")
    print(
        f"peak RSS per process: {peak / 1024:.0f} MB for {args.images} images, {peak_small / 1024:.0f} MB for {small}"
    )


if __name__ == "__main__":
    main()
