"""The model families loraforge trains, by name: a module of its own, so the CLI's choices import no pydantic."""

from typing import Literal

Family = Literal["sd15", "sdxl", "flux", "sd3", "chroma", "lumina2", "qwen_image", "flux2"]
