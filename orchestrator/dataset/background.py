"""Optional background removal with rembg (the `bg` extra). Real users get rembg's model on first use; a local
ONNX file can be given instead (``LORAFORGE_REMBG_MODEL`` or ``background_model``)."""

from __future__ import annotations

import os
from functools import cache

from PIL import Image

from orchestrator.errors import LoraforgeError


@cache
def _session(model_path: str | None):  # type: ignore[no-untyped-def]
    try:
        from rembg import new_session
    except ImportError:
        raise LoraforgeError("--remove-background needs rembg", "install it: pip install 'loraforge[bg]'") from None
    if model_path:
        return new_session("u2net_custom", model_path=model_path)
    return new_session("u2net")


def remove_background(image: Image.Image, model_path: str | None = None) -> Image.Image:
    from rembg import remove

    session = _session(model_path or os.environ.get("LORAFORGE_REMBG_MODEL"))
    cut = remove(image, session=session)
    flat = Image.new("RGB", cut.size, (255, 255, 255))
    flat.paste(cut, mask=cut.getchannel("A"))
    return flat


def check_available() -> None:
    try:
        import rembg  # noqa: F401
    except ImportError:
        raise LoraforgeError("--remove-background needs rembg", "install it: pip install 'loraforge[bg]'") from None
