"""Events from files a backend writes beside its log: sample images, and metrics lines with a validation loss.

sd-scripts never prints a sample's file name and SimpleTuner logs its validation loss only to a tracker, so the
backend names the folder or file (``Backend.watched``) and the run polls them while the child's output flows: at most
once a second, and once more after the child exits so a sample written just before the end is not missed.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.events import Event, Sample, Validation

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class SampleFolder:
    """Images saved during training. ``pattern`` matches a file name anywhere under ``folder``: group ``step``,
    and ``index`` (the prompt's position in ``job.sampling.prompts``) where the backend writes one."""

    folder: Path
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class MetricsFile:
    """JSON lines ``{"step": N, "metrics": {name: value}}``; metrics whose name starts with ``validation_prefix``
    hold a validation loss (their mean, when there are several held-out sets)."""

    path: Path
    validation_prefix: str


Watched = SampleFolder | MetricsFile


class RunWatcher:
    def __init__(self, watched: list[Watched], prompts: list[str], interval: float = 1.0) -> None:
        self.watched = watched
        self.prompts = prompts
        self.interval = interval
        self.next_poll = 0.0
        self.seen: set[str] = set()  # sample files already reported
        self.offsets: dict[Path, int] = {}  # bytes of each metrics file already read
        self.validated: set[int] = set()
        self.lock = threading.Lock()  # both output streams' reader threads poll
        # A resumed run keeps its folder: what is already there was reported by the attempt that wrote it.
        for item in watched:
            if isinstance(item, SampleFolder):
                self._samples(item)
            elif item.path.exists():
                self.offsets[item.path] = item.path.stat().st_size

    def poll(self, *, force: bool = False) -> list[Event]:
        now = time.monotonic()
        if not self.watched or (not force and now < self.next_poll):
            return []
        if not self.lock.acquire(blocking=force):
            return []  # the other stream's thread is polling right now
        try:
            self.next_poll = now + self.interval
            events: list[Event] = []
            for item in self.watched:
                if isinstance(item, SampleFolder):
                    events.extend(self._samples(item))
                else:
                    events.extend(self._metrics(item))
            return events
        finally:
            self.lock.release()

    def _samples(self, item: SampleFolder) -> list[Sample]:
        if not item.folder.is_dir():
            return []
        found = []
        for root, _, files in os.walk(item.folder):
            for name in files:
                path = os.path.join(root, name)
                if path in self.seen or not name.lower().endswith(IMAGE_SUFFIXES):
                    continue
                match = item.pattern.search(name)
                if match is None:
                    continue
                self.seen.add(path)
                groups = match.groupdict()
                index = int(groups["index"]) if groups.get("index") is not None else None
                prompt = self.prompts[index] if index is not None and index < len(self.prompts) else None
                found.append(Sample(path=path, step=int(groups["step"]), prompt=prompt))
        return sorted(found, key=lambda s: (s.step or 0, s.path))

    def _metrics(self, item: MetricsFile) -> list[Validation]:
        try:
            with item.path.open("rb") as f:
                f.seek(self.offsets.get(item.path, 0))
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []  # no complete line yet: a line being written is read on the next poll
        self.offsets[item.path] = self.offsets.get(item.path, 0) + end + 1
        events = []
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
                step = int(record["step"])
                losses = [
                    float(v)
                    for k, v in record["metrics"].items()
                    if k.startswith(item.validation_prefix) and isinstance(v, (int, float))
                ]
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if losses and step not in self.validated:
                self.validated.add(step)
                events.append(Validation(step=step, loss=sum(losses) / len(losses)))
        return events
