"""Replaying saved trainer output through a backend's parser: what `loraforge parse-log` prints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from orchestrator.errors import LoraforgeError
from orchestrator.events import event_to_json


def replay(backend_name: str, streams: list[tuple[str, Path]], returncode: int | None, *, chunk: int) -> Iterator[str]:
    """Each event as a JSON line: the files read in order (stdout before stderr) in ``chunk``-byte pieces, then the
    end of the run with ``returncode`` (None: unknown; a log ending in an uncaught traceback is a failure)."""
    from backends import base

    parser = base.get(backend_name).parser()
    for stream, path in streams:
        try:
            with path.open("rb") as f:
                while data := f.read(chunk):
                    for event in parser.feed(data, stream):
                        yield event_to_json(event)
        except FileNotFoundError:
            raise LoraforgeError(f"log file {path} does not exist", "pass a saved log, e.g. runs/RUN/logs/stderr.log") from None
        except IsADirectoryError:
            raise LoraforgeError(f"{path} is a folder, not a log file", "pass e.g. runs/RUN/logs/stderr.log") from None
    for event in parser.finish(returncode):
        yield event_to_json(event)
