"""BLIP (Salesforce): a short, plain caption; good for objects and styles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.captions import hf
from orchestrator.captions.base import CaptionerSettings

if TYPE_CHECKING:
    from PIL.Image import Image

DEFAULT_MODEL = "Salesforce/blip-image-captioning-large"
MAX_NEW_TOKENS = {"caption": 30, "detailed": 50, "more-detailed": 75}


class BlipCaptioner:
    name = "blip"

    def __init__(self, settings: CaptionerSettings) -> None:
        self.settings = settings

    def load(self) -> None:
        folder, self.device, self.dtype = hf.prepare(self.name, self.settings, DEFAULT_MODEL)
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.processor = hf.load_or_explain("BLIP processor", folder, BlipProcessor.from_pretrained)
        model = hf.load_or_explain(
            "BLIP model", folder, BlipForConditionalGeneration.from_pretrained, output_loading_info=True
        )
        self.model = hf.to_device(model, self.device, self.dtype)

    def caption(self, images: list[Image]) -> list[str]:
        import torch

        inputs = self.processor(images=images, return_tensors="pt").to(self.device, self.dtype)
        with torch.inference_mode():
            ids = self.model.generate(
                **inputs, max_new_tokens=MAX_NEW_TOKENS[self.settings.task], num_beams=3, do_sample=False
            )
        return list(self.processor.batch_decode(ids, skip_special_tokens=True))
