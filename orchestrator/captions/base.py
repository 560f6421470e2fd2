"""The Captioner protocol and the registry of captioners by name.

A captioner turns a batch of PIL images into one raw caption each. Everything around it (reading images, cleanup,
the trigger token, writing .txt files) lives in ``pipeline.py`` so each model module stays small and readable.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from orchestrator.errors import LoraforgeError

if TYPE_CHECKING:
    from PIL.Image import Image

Task = Literal["caption", "detailed", "more-detailed"]
TASKS: tuple[str, ...] = ("caption", "detailed", "more-detailed")
DEVICES: tuple[str, ...] = ("auto", "cuda", "mps", "cpu")


@runtime_checkable
class Captioner(Protocol):
    """One image-to-text model. ``load`` once (slow), then ``caption`` batches (lists of RGB images)."""

    name: str

    def load(self) -> None: ...

    def caption(self, images: list[Image]) -> list[str]: ...


@dataclass(frozen=True)
class CaptionerSettings:
    """What every captioner may be given; each uses the parts that apply to it."""

    model: str | None = None  # hub id or local folder; None = the captioner's default
    task: Task = "caption"
    device: str = "auto"
    trigger: str | None = None
    template: str = "photo of {trigger}"
    trust_remote_code: bool = False
    general_threshold: float = 0.35  # WD14: general tags
    character_threshold: float = 0.85  # WD14: character tags


# name -> (module, class). Imported only when chosen, so the core install never needs torch or onnxruntime.
CAPTIONERS: dict[str, tuple[str, str]] = {
    "florence2": ("orchestrator.captions.florence2", "Florence2Captioner"),
    "blip": ("orchestrator.captions.blip", "BlipCaptioner"),
    "blip2": ("orchestrator.captions.blip2", "Blip2Captioner"),
    "wd14": ("orchestrator.captions.wd14", "Wd14Captioner"),
    "template": ("orchestrator.captions.template", "TemplateCaptioner"),
}


def make_captioner(name: str, settings: CaptionerSettings) -> Captioner:
    if name not in CAPTIONERS:
        raise LoraforgeError(f"unknown captioner {name!r}", f"choose one of: {', '.join(CAPTIONERS)}")
    if settings.task not in TASKS:
        raise LoraforgeError(f"unknown caption task {settings.task!r}", f"choose one of: {', '.join(TASKS)}")
    if settings.device not in DEVICES:
        raise LoraforgeError(f"unknown device {settings.device!r}", f"choose one of: {', '.join(DEVICES)}")
    module, cls = CAPTIONERS[name]
    return getattr(importlib.import_module(module), cls)(settings)
