"""Prep's settings and its duplicate rule: what a rerun needs without importing any image library (a warm rerun
over unchanged photos reads only caches)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DUPLICATE_DISTANCE = 8  # Hamming distance of 64-bit pHashes; re-encodes and resizes stay below it


@dataclass(frozen=True)
class Options:
    subject: str
    size: int
    crop: str  # face | center | none
    remove_background: bool
    background_model: str | None = None

    def key(self) -> str:
        return f"{self.subject}-{self.size}-{self.crop}-{int(self.remove_background)}-{self.background_model or ''}-v2"


def options_dict(options: Options) -> dict[str, Any]:
    return asdict(options)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()
