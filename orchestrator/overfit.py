"""Find where a run starts to overfit: validation loss turns up while training loss still falls."""

from __future__ import annotations

from typing import Any

from orchestrator.events import Event, Log, Progress, Validation


def find_turn(rows: list[dict[str, Any]]) -> int | None:
    """The first checkpoint step at which validation loss rose over the previous checkpoint while training loss
    fell over the same interval; None if validation loss never turns up (or was not measured)."""
    measured = [r for r in rows if r.get("val_loss") is not None and r.get("train_loss") is not None]
    for prev, cur in zip(measured, measured[1:], strict=False):
        if cur["val_loss"] > prev["val_loss"] and cur["train_loss"] < prev["train_loss"]:
            return cur["step"]
    return None


class OverfitWatch:
    """The same test while a run trains: one warning, at the first validation where the turn shows."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.losses: list[float] = []  # training losses since the last validation
        self.warned = False

    def see(self, event: Event) -> Log | None:
        if isinstance(event, Progress) and event.loss is not None:
            self.losses.append(event.loss)
        elif isinstance(event, Validation):
            train = sum(self.losses) / len(self.losses) if self.losses else None
            self.losses = []
            self.rows.append({"step": event.step, "train_loss": train, "val_loss": event.loss})
            if not self.warned and find_turn(self.rows) == event.step:
                self.warned = True
                before = self.rows[-2]
                return Log(
                    "warning",
                    f"validation loss rose at step {event.step} ({before['val_loss']:.4f} -> {event.loss:.4f}) while "
                    f"training loss fell: the LoRA is starting to memorise its photos; the checkpoint at step "
                    f"{before['step']} may generalise better (compare their samples)",
                )
        return None
