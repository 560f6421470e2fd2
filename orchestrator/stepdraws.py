"""One reading per training step from a tqdm bar that draws each step more than once.

Both trainers advance their bar after the optimizer step (``update(1)``: a draw whose postfix still shows the
previous step's loss) and then set the new loss (``set_postfix``: a draw with the step's own loss); tqdm redraws
again when only the clock changed, and on a fast GPU skips the first draw (``mininterval``) while ``set_postfix``
always draws. So a step's own loss is on its last draw, and:

- a step drawn twice or more is reported at its second draw, with that draw's loss;
- a step drawn once is reported when the next step's first draw arrives (or at the end), with its only draw.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class StepDraws(Generic[T]):
    def __init__(self) -> None:
        self.step: int | None = None
        self.latest: T | None = None  # the newest draw of the current step
        self.reported = False

    def draw(self, step: int, reading: T) -> list[T]:
        """A draw of ``step``; the readings now due (at most two: a step drawn once, then this one)."""
        if step == self.step:
            self.latest = reading
            if self.reported:
                return []
            self.reported = True
            return [reading]
        due = self.flush()
        self.step, self.latest, self.reported = step, reading, False
        return due

    def flush(self) -> list[T]:
        """The current step's reading if it was drawn only once (the bar ended, or the run did)."""
        if self.step is None or self.reported or self.latest is None:
            return []
        self.reported = True
        return [self.latest]

    def draw_all(self, draws: Iterable[tuple[int, T]]) -> list[T]:
        """:meth:`draw` for each ``(step, reading)`` in order, in one call: the readings now due."""
        step, latest, reported = self.step, self.latest, self.reported
        due: list[T] = []
        for drawn, reading in draws:
            if drawn == step:
                latest = reading
                if not reported:
                    reported = True
                    due.append(reading)
            else:
                if step is not None and not reported and latest is not None:
                    due.append(latest)
                step, latest, reported = drawn, reading, False
        self.step, self.latest, self.reported = step, latest, reported
        return due
