"""Captioning throughput (images/s): the template path and each tiny-model path, end to end through caption_dataset.

Every run reads the images, captions them (overwrite), cleans, adds the trigger, counts tokens and writes the .txt
files, so the figure is what a user sees, not the bare model call. The tiny models have real architectures and
processors at toy size: their figure measures loraforge's overhead around a model, not a real model's speed.

usage:  python benchmarks/caption.py [--images 64] [--size 512] [--batch-size 8] [--device cpu]
        [--only template,wd14,...] [--model NAME=DIR ...]  (DIR: a real checkpoint, e.g. on a GPU machine)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NAMES = ("template", "wd14", "blip", "blip2", "florence2")


def make_images(folder: Path, count: int, size: int) -> None:
    """Real photographs (scikit-image's bundled ones) when available, else smooth synthetic images; JPEG q90."""
    import numpy as np
    from PIL import Image

    try:
        from skimage import data

        sources = [Image.fromarray(f()) for f in (data.astronaut, data.chelsea, data.coffee, data.rocket)]
    except ImportError:
        ramp = np.linspace(0, 255, size, dtype=np.uint8)
        sources = [Image.fromarray(np.dstack([np.tile(ramp, (size, 1))] * 3))]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        im = sources[i % len(sources)].convert("RGB").resize((size, size))
        im.save(folder / f"img_{i:04d}.jpg", quality=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default=",".join(NAMES))
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from orchestrator.captions import caption_dataset

    given = dict(item.split("=", 1) for item in args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lf-caption-bench-") as tmp:
        root = Path(tmp)
        make_images(root / "images", args.images, args.size)
        for name in args.only.split(","):
            model = given.get(name)
            if model is None and name != "template":
                from orchestrator.captions import tiny

                model = str(tiny.build(name, root / "models" / name))
            kw = dict(
                captioner=name, model=model, trigger="ohwx person", batch_size=args.batch_size, device=args.device
            )
            # warm-up on a copy of two images: loads weights and compiles kernels outside the timed run
            warm = root / f"warm-{name}"
            make_images(warm, 2, args.size)
            caption_dataset(warm, mode="overwrite", **kw)
            started = time.perf_counter()
            result = caption_dataset(root / "images", mode="overwrite", **kw)
            seconds = time.perf_counter() - started
            rows.append(
                {
                    "captioner": name,
                    "model": "real: " + model if name in given else ("none" if name == "template" else "tiny"),
                    "images": result.written,
                    "seconds": round(seconds, 3),
                    "load_s": round(result.load_seconds, 3),
                    "images_per_s": round(result.written / seconds, 1),  # end to end, model load included
                    "images_per_s_loaded": round(result.images_per_second, 1),  # once the model is loaded
                }
            )
            if not args.json:
                r = rows[-1]
                print(
                    f"{name:10s} {r['model']:6s} {r['images']:4d} images {r['seconds']:7.2f} s (load {r['load_s']:.2f} s)"
                    f" {r['images_per_s']:8.1f} img/s end to end {r['images_per_s_loaded']:8.1f} img/s loaded"
                )
    if args.json:
        print(json.dumps({"device": args.device, "size": args.size, "batch_size": args.batch_size, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
