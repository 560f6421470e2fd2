"""WD14 taggers (SmilingWolf) through onnxruntime: booru tags as a caption, no torch needed.

The model file takes float32 NHWC images, BGR, 0..255, padded to a white square; it returns one sigmoid probability
per row of ``selected_tags.csv`` (columns tag_id, name, category, count; category 9 = rating, 4 = character,
anything else = general).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.captions.base import CaptionerSettings
from orchestrator.captions.hub import require, resolve_model
from orchestrator.errors import LoraforgeError

if TYPE_CHECKING:
    from PIL.Image import Image

DEFAULT_MODEL = "SmilingWolf/wd-v1-4-moat-tagger-v2"
RATING, CHARACTER = 9, 4
# Emoticon tags whose underscores are the face itself: "^_^" must stay "^_^", not "^ ^".
KAOMOJI = frozenset(
    [
        "0_0",
        "(o)_(o)",
        "+_+",
        "+_-",
        "._.",
        "<o>_<o>",
        "<|>_<|>",
        "=_=",
        ">_<",
        "3_3",
        "6_9",
        ">_o",
        "@_@",
        "^_^",
        "o_o",
        "u_u",
        "x_x",
        "|_|",
        "||_||",
    ]
)


@dataclass(frozen=True)
class Tag:
    name: str
    category: int


def format_tag(name: str) -> str:
    """Booru tag -> caption text: underscores to spaces, parentheses escaped (they mean emphasis to prompt parsers)."""
    text = name if name in KAOMOJI else name.replace("_", " ")
    return text.replace("(", r"\(").replace(")", r"\)")


def read_tags(path: Path) -> list[Tag]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return [Tag(row["name"], int(row["category"])) for row in csv.DictReader(f)]
    except (KeyError, ValueError, TypeError) as exc:
        raise LoraforgeError(
            f"{path} is not a WD14 tag list (need columns name and category)", "use the tagger's selected_tags.csv"
        ) from exc


def select_tags(
    tags: list[Tag], probs: Any, general_threshold: float = 0.35, character_threshold: float = 0.85
) -> list[str]:
    """Characters first, then general tags, each by falling probability; ratings dropped."""
    chars: list[tuple[float, str]] = []
    general: list[tuple[float, str]] = []
    for tag, p in zip(tags, (float(x) for x in probs), strict=True):
        if tag.category == RATING:
            continue
        if tag.category == CHARACTER:
            if p >= character_threshold:
                chars.append((p, tag.name))
        elif p >= general_threshold:
            general.append((p, tag.name))
    ordered = sorted(chars, key=lambda t: -t[0]) + sorted(general, key=lambda t: -t[0])
    return [format_tag(name) for _, name in ordered]


def square_bgr(image: Image, size: int) -> Any:
    import numpy as np
    from PIL import Image as PILImage

    w, h = image.size
    side = max(w, h)
    canvas = PILImage.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(image.convert("RGB"), ((side - w) // 2, (side - h) // 2))
    canvas = canvas.resize((size, size), PILImage.Resampling.BICUBIC)
    return np.asarray(canvas, dtype=np.float32)[:, :, ::-1]  # RGB -> BGR


class Wd14Captioner:
    name = "wd14"

    def __init__(self, settings: CaptionerSettings) -> None:
        self.settings = settings

    def load(self) -> None:
        require("onnxruntime", self.name)
        import onnxruntime as ort

        model = self.settings.model or DEFAULT_MODEL
        folder = resolve_model(model, captioner=self.name, files=("*.onnx", "selected_tags.csv"))
        onnx_files = sorted(folder.glob("*.onnx"))
        csv_file = folder / "selected_tags.csv"
        if not onnx_files or not csv_file.is_file():
            raise LoraforgeError(
                f"{folder} does not hold a WD14 tagger (need model.onnx and selected_tags.csv)",
                "pass --model a folder with both files, or a SmilingWolf/wd-* hub id",
            )
        onnx_file = folder / "model.onnx" if (folder / "model.onnx").is_file() else onnx_files[0]
        self.tags = read_tags(csv_file)
        available = ort.get_available_providers()
        want_gpu = self.settings.device in ("auto", "cuda") and "CUDAExecutionProvider" in available
        providers = (["CUDAExecutionProvider"] if want_gpu else []) + ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(onnx_file), providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for a bad graph
            raise LoraforgeError(f"{onnx_file} is not a usable ONNX model: {exc}", "re-download the tagger") from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.nchw = inp.shape[1] == 3 and inp.shape[3] != 3
        side = inp.shape[2] if self.nchw else inp.shape[1]
        self.size = side if isinstance(side, int) else 448
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        n_out = self.session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.tags):
            raise LoraforgeError(
                f"{onnx_file} predicts {n_out} tags but {csv_file} lists {len(self.tags)}",
                "use the selected_tags.csv that came with this model",
            )

    def caption(self, images: list[Image]) -> list[str]:
        import numpy as np

        batch = np.stack([square_bgr(im, self.size) for im in images])
        if self.nchw:
            batch = batch.transpose(0, 3, 1, 2)
        step = self.fixed_batch or len(images)  # some exports have a fixed batch size of 1
        probs = np.concatenate(
            [self.session.run(None, {self.input_name: batch[i : i + step]})[0] for i in range(0, len(batch), step)]
        )
        s = self.settings
        return [", ".join(select_tags(self.tags, row, s.general_threshold, s.character_threshold)) for row in probs]
