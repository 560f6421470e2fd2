"""Captioning: a Captioner per model (florence2, blip, blip2, wd14, template) and caption_dataset to run one.

Importing this package is light: torch, transformers and onnxruntime load only when a model captioner is used.
"""

from orchestrator.captions.base import CAPTIONERS, TASKS, Captioner, CaptionerSettings, make_captioner
from orchestrator.captions.pipeline import CaptionResult, caption_dataset

__all__ = [
    "CAPTIONERS",
    "TASKS",
    "CaptionResult",
    "Captioner",
    "CaptionerSettings",
    "caption_dataset",
    "make_captioner",
]
