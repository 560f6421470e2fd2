"""Florence-2 through transformers' native classes (no remote code unless the user passes --trust-remote-code)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.captions import hf
from orchestrator.captions.base import CaptionerSettings

if TYPE_CHECKING:
    from PIL.Image import Image

# The checkpoint converted for transformers' built-in Florence-2 (microsoft/Florence-2-base needs remote code).
DEFAULT_MODEL = "florence-community/Florence-2-base"
PROMPTS = {"caption": "<CAPTION>", "detailed": "<DETAILED_CAPTION>", "more-detailed": "<MORE_DETAILED_CAPTION>"}
MAX_NEW_TOKENS = {"caption": 48, "detailed": 128, "more-detailed": 256}


class Florence2Captioner:
    name = "florence2"

    def __init__(self, settings: CaptionerSettings) -> None:
        self.settings = settings
        self.prompt = PROMPTS[settings.task]

    def load(self) -> None:
        folder, self.device, self.dtype = hf.prepare(self.name, self.settings, DEFAULT_MODEL)
        from transformers import AutoModelForCausalLM, AutoProcessor, Florence2ForConditionalGeneration

        remote = self.settings.trust_remote_code
        self.processor = hf.load_or_explain(
            "Florence-2 processor", folder, AutoProcessor.from_pretrained, trust_remote_code=remote
        )
        if remote:  # the checkpoint's own modelling code, as its authors wrote it for AutoModelForCausalLM
            model = hf.load_or_explain(
                "Florence-2 model", folder, AutoModelForCausalLM.from_pretrained, trust_remote_code=True
            )
        else:
            model = hf.load_or_explain(
                "Florence-2 model", folder, Florence2ForConditionalGeneration.from_pretrained, output_loading_info=True
            )
        self.model = hf.to_device(model, self.device, self.dtype)

    def caption(self, images: list[Image]) -> list[str]:
        import torch

        inputs = self.processor(text=[self.prompt] * len(images), images=images, return_tensors="pt")
        inputs = inputs.to(self.device, self.dtype)
        with torch.inference_mode():
            ids = self.model.generate(
                **inputs, max_new_tokens=MAX_NEW_TOKENS[self.settings.task], num_beams=3, do_sample=False
            )
        raw = self.processor.batch_decode(ids, skip_special_tokens=False)
        out = []
        for text, image in zip(raw, images, strict=True):
            parsed = self.processor.post_process_generation(text, task=self.prompt, image_size=image.size)
            out.append(str(parsed.get(self.prompt, "")))
        return out
