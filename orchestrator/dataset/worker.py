"""Work on one photo, in a pool process: decode, check, crop, resize, write. Returns a plain dict (picklable)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from PIL import Image

from orchestrator.dataset import checks, crop
from orchestrator.dataset.decode import DecodeError, load_rgb
from orchestrator.dataset.options import Options


def process(source: str, output: str, options: Options) -> dict[str, Any]:
    result: dict[str, Any] = {"source": source, "verdict": "rejected", "reasons": [], "output": None}
    reasons: list[str] = result["reasons"]
    try:
        image, original = load_rgb(Path(source), min_side=min(options.size, 1024))
    except DecodeError as exc:
        reasons.append(str(exc))
        return result
    result["original_size"] = list(original)
    result["thumbnail"] = None
    width, height = image.size
    short = min(original)
    if short < options.size // 2:
        reasons.append(
            f"too small: {original[0]}x{original[1]}; needs at least {options.size // 2} px on the short side"
        )
    aspect = max(width, height) / min(width, height)
    if aspect > checks.MAX_ASPECT:
        reasons.append(f"extreme aspect ratio {aspect:.1f}:1 (at most {checks.MAX_ASPECT}:1)")
    grey = checks.grey(image)
    sharp = checks.sharpness(grey)
    result["sharpness"] = round(sharp, 1)
    if sharp < checks.BLUR_THRESHOLD:
        reasons.append(f"blurry (sharpness {sharp:.0f}, needs {checks.BLUR_THRESHOLD:.0f})")
    box: crop.Box | None = None
    if options.subject == "face" or options.crop == "face":
        found = checks.faces(image)
        main = checks.significant_faces(found)
        scale = original[0] / width  # faces and crop box are reported in the original photo's pixels
        result["faces"] = [[round(v * scale) for v in b] for b in main]
        if options.subject == "face" and not main:
            reasons.append("no face found")
        elif options.subject == "face" and len(main) > 1:
            reasons.append(f"several faces ({len(main)}): a face LoRA needs one person per photo")
        if options.crop == "face" and main:
            box = crop.face_box(width, height, main[0])
    if box is None and options.crop in ("center", "face"):
        box = crop.center_box(width, height)
    if reasons:
        result["thumbnail"] = thumbnail(image)
        return result
    if box is not None:
        image = image.crop(box)
        scale = original[0] / width
        result["crop_box"] = [round(v * scale) for v in box]  # in the original photo's pixels
    out_size = crop.output_size(image.width, image.height, options.size)
    if image.size != out_size:
        image = image.resize(out_size, crop.resample())
    if options.remove_background:
        from orchestrator.dataset.background import remove_background

        image = remove_background(image, options.background_model)
    # JPEG at quality 95 without chroma subsampling: visually lossless, and ~10x faster to write than PNG.
    image.save(output, format="JPEG", quality=95, subsampling=0)
    result.update(
        verdict="accepted",
        output=output,
        output_size=list(out_size),
        phash=f"{checks.phash(checks.grey(image, 256)):016x}",
        thumbnail=thumbnail(image),
    )
    return result


def thumbnail(image: Image.Image) -> str:
    """A 160-px JPEG as a data URI, made while the image is in memory, so the report never decodes again."""
    small = image.copy()
    small.thumbnail((160, 160), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def process_star(args: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    source, output, options = args
    return process(source, output, Options(**options))
