"""Live updates: each watched run's events.jsonl is tailed once, and every viewer is sent every line of it.

One truth with the CLI: the trainer's run writes events.jsonl (``loraforge logs -f`` and ``runs show`` read the same
file); the server only reads it. One poller thread reads the new bytes of every watched run ten times a second and
wakes the viewers; each viewer (one server-sent-events connection, which may follow several runs: the compare page)
keeps only its position in each run's list of lines, so fifty viewers cost fifty positions, not fifty copies.

Each message is ``{"run": NAME, "n": INDEX, "e": EVENT}``; the SSE ``id`` holds the viewer's positions, so a browser
that reconnects (``Last-Event-ID``) goes on from where it was, seeing every event once. Besides the file's events
the stream carries one derived event, ``{"event": "overfit", "step", "before"}``, where the run's own overfitting
watch (orchestrator.overfit, the test the trainer's run applies) finds validation loss turning up: the loss chart
marks it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.events import Validation, event_from_dict
from orchestrator.overfit import OverfitWatch
from orchestrator.web.responses import HttpError

POLL_S = 0.1
HEARTBEAT_S = 15.0
IDLE_S = 60.0  # a run nobody watched for this long is forgotten
MAX_READ = 8 * 1024**2


class Tail:
    """The complete lines appended to a file since the last read; a torn last line waits for its newline."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.mtime = 0.0  # the file's modification time at the last read

    def read(self) -> list[str]:
        try:
            stat = os.stat(self.path)
        except OSError:
            return []
        size, self.mtime = stat.st_size, stat.st_mtime
        if size < self.offset:  # replaced or truncated: read it again from the start
            self.offset, self.partial = 0, b""
        if size == self.offset:
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read(min(size - self.offset, MAX_READ))
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [line.decode("utf-8", "replace").strip() for line in lines if line.strip()]


class Feed:
    """One run's events as JSON text, in order, shared by all its viewers."""

    def __init__(self, events_file: Path) -> None:
        self.tail = Tail(events_file)
        self.lines: list[str] = []
        self.watch = OverfitWatch()
        self.viewers = 0
        self.used = time.monotonic()
        self._lock = threading.Lock()  # guards lines
        self._reading = threading.Lock()  # one poll at a time: the poller thread and each new viewer's request poll

    def poll(self) -> bool:
        """Read what the trainer appended; True when there is something new."""
        with self._reading:  # the tail's offset and the overfit watch move in one thread at a time, in file order
            return self._poll()

    def _poll(self) -> bool:
        added: list[str] = []
        for line in self.tail.read():
            try:
                event = event_from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue  # not an event line: never forwarded
            added.append(line)
            if self.watch.see(event) is not None and isinstance(event, Validation):
                before = self.watch.rows[-2]["step"]
                added.append(json.dumps({"event": "overfit", "step": event.step, "before": before}))
        if added:
            with self._lock:
                self.lines.extend(added)
        return bool(added)

    def since(self, index: int) -> list[str]:
        with self._lock:
            return self.lines[index:]


class Feeds:
    """Every watched run's Feed, the poller thread that fills them, and the streams that send them."""

    def __init__(self, *, poll_s: float = POLL_S, max_streams: int = 256) -> None:
        self.poll_s = poll_s
        self.max_streams = max_streams
        self.streams = 0
        self._feeds: dict[Path, Feed] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._generation = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="live-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def feed(self, run: Path) -> Feed:
        with self._lock:
            feed = self._feeds.get(run)
            if feed is None:
                feed = self._feeds[run] = Feed(run / "events.jsonl")
            feed.used = time.monotonic()
        feed.poll()
        return feed

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            now = time.monotonic()
            with self._lock:
                for run, feed in list(self._feeds.items()):
                    if feed.viewers == 0 and now - feed.used > IDLE_S:
                        del self._feeds[run]
                watched = [feed for feed in self._feeds.values() if feed.viewers > 0]
            changed = False
            for feed in watched:
                changed |= feed.poll()
            if changed:
                with self._changed:
                    self._generation += 1
                    self._changed.notify_all()

    def _wait(self, generation: int, timeout: float) -> int:
        with self._changed:
            if self._generation == generation and not self._stop.is_set():
                self._changed.wait(timeout)
            return self._generation

    def admit(self) -> None:
        """Count one more viewer, or refuse it (503) while the server holds ``max_streams`` of them."""
        with self._lock:
            if self.streams >= self.max_streams:
                raise HttpError(503, f"too many live viewers ({self.max_streams}); close some pages")
            self.streams += 1

    def stream(
        self,
        runs: list[tuple[str, Path]],
        start: list[int],
        send: Callable[[bytes], None],
        stopping: Callable[[], bool],
    ) -> None:
        """Send every event of ``runs`` from ``start`` on, then each new one as it comes, until the viewer leaves.
        The caller has been :meth:`admit`-ted; this gives its place back at the end."""
        feeds = [self.feed(path) for _, path in runs]
        with self._lock:
            for feed in feeds:
                feed.viewers += 1
        names = [json.dumps(name) for name, _ in runs]
        positions = list(start)
        try:
            send(b"retry: 1000\n\n")
            last_sent = time.monotonic()
            while not stopping() and not self._stop.is_set():
                generation = self._generation
                parts: list[str] = []
                for i, feed in enumerate(feeds):
                    for line in feed.since(positions[i]):
                        n = positions[i]
                        positions[i] += 1
                        ids = ",".join(map(str, positions))
                        parts.append(f'id: {ids}\ndata: {{"run": {names[i]}, "n": {n}, "e": {line}}}\n\n')
                if parts:
                    send("".join(parts).encode())
                    last_sent = time.monotonic()
                elif time.monotonic() - last_sent >= HEARTBEAT_S:
                    send(b": ping\n\n")  # also how a viewer that left is noticed
                    last_sent = time.monotonic()
                self._wait(generation, HEARTBEAT_S)
        finally:
            with self._lock:
                for feed in feeds:
                    feed.viewers -= 1
                    feed.used = time.monotonic()
                self.streams -= 1


def parse_positions(last_event_id: str | None, count: int) -> list[int]:
    """The positions a reconnecting viewer had reached (its ``Last-Event-ID``); zeros for a new viewer."""
    if last_event_id:
        values = last_event_id.split(",")
        if len(values) == count and all(v.isdigit() for v in values):
            return [int(v) for v in values]
    return [0] * count
