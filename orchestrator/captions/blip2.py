"""BLIP-2 (Q-Former + OPT language model): fuller sentences than BLIP; large (2.7B+ parameters)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.captions import hf
from orchestrator.captions.base import CaptionerSettings

if TYPE_CHECKING:
    from PIL.Image import Image

DEFAULT_MODEL = "Salesforce/blip2-opt-2.7b"
# No prompt gives BLIP-2's plain caption; a question steers the language model towards detail.
PROMPTS = {
    "caption": None,
    "detailed": "Question: Describe this image in detail. Answer:",
    "more-detailed": "Question: Describe everything in this image, in several sentences. Answer:",
}
MAX_NEW_TOKENS = {"caption": 40, "detailed": 80, "more-detailed": 150}


class Blip2Captioner:
    name = "blip2"

    def __init__(self, settings: CaptionerSettings) -> None:
        self.settings = settings
        self.prompt = PROMPTS[settings.task]

    def load(self) -> None:
        folder, self.device, self.dtype = hf.prepare(self.name, self.settings, DEFAULT_MODEL)
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        self.processor = hf.load_or_explain("BLIP-2 processor", folder, Blip2Processor.from_pretrained)
        model = hf.load_or_explain(
            "BLIP-2 model", folder, Blip2ForConditionalGeneration.from_pretrained, output_loading_info=True
        )
        self.model = hf.to_device(model, self.device, self.dtype)

    def caption(self, images: list[Image]) -> list[str]:
        import torch

        text = [self.prompt] * len(images) if self.prompt else None
        inputs = self.processor(images=images, text=text, return_tensors="pt").to(self.device, self.dtype)
        with torch.inference_mode():
            ids = self.model.generate(
                **inputs, max_new_tokens=MAX_NEW_TOKENS[self.settings.task], num_beams=3, do_sample=False
            )
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        if self.prompt:  # decoder-only: the output repeats the prompt
            texts = [t.split("Answer:", 1)[-1] if t.lstrip().startswith("Question:") else t for t in texts]
        return [t.strip() for t in texts]
