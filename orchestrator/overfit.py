"""Find where a run starts to overfit: validation loss turns up while training loss still falls."""

from __future__ import annotations

from typing import Any


def find_turn(rows: list[dict[str, Any]]) -> int | None:
    """The first checkpoint step at which validation loss rose over the previous checkpoint while training loss
    fell over the same interval; None if validation loss never turns up (or was not measured)."""
    measured = [r for r in rows if r.get("val_loss") is not None and r.get("train_loss") is not None]
    for prev, cur in zip(measured, measured[1:], strict=False):
        if cur["val_loss"] > prev["val_loss"] and cur["train_loss"] < prev["train_loss"]:
            return cur["step"]
    return None
