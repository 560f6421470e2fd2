"""The ``template`` captioner: the same caption for every image (e.g. "photo of ohwx person"); no model at all.

Good for faces, where a plain caption makes the trigger carry everything the images share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.captions.base import CaptionerSettings
from orchestrator.captions.trigger import normalise_trigger
from orchestrator.errors import LoraforgeError

if TYPE_CHECKING:
    from PIL.Image import Image


class TemplateCaptioner:
    name = "template"

    def __init__(self, settings: CaptionerSettings) -> None:
        self.template = settings.template
        self.trigger = normalise_trigger(settings.trigger)

    def load(self) -> None:
        if "{trigger}" in self.template and self.trigger is None:
            raise LoraforgeError(
                f"the template captioner writes {self.template!r}, which needs a trigger",
                'pass --trigger, e.g. --trigger "ohwx person"',
            )
        try:
            self.text = self.template.format(trigger=self.trigger or "")
        except (KeyError, IndexError, ValueError) as exc:
            raise LoraforgeError(
                f"caption template {self.template!r} is not valid ({exc})",
                "use {trigger} as the only placeholder, e.g. 'photo of {trigger}'",
            ) from exc

    def caption(self, images: list[Image]) -> list[str]:
        return [self.text for _ in images]
