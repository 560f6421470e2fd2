"""What a route gets and what it gives back: Request, Response (bytes, a file, or a stream) and HttpError."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

MAX_JSON_BODY = 2 * 1024**2


class HttpError(Exception):
    """Answer with ``status`` and a one-line ``message`` (shown to the user as is)."""

    def __init__(self, status: int, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint


class Headers(dict[str, str]):
    """Request headers, looked up by name in any case (HTTP header names are case-insensitive; clients differ)."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__((key.lower(), value) for key, value in items)

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(str(key).lower())


@dataclass
class Request:
    method: str
    path: str  # the path as sent (still percent-encoded), without the query
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    params: dict[str, str]  # path parameters, decoded
    body: IO[bytes]  # the request body, at most ``length`` bytes to read
    length: int

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> dict[str, Any]:
        if self.length > MAX_JSON_BODY:
            raise HttpError(413, f"request body over {MAX_JSON_BODY // 1024**2} MiB")
        raw = self.body.read(self.length) if self.length else b"{}"
        self.length = 0
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise HttpError(400, "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise HttpError(400, "the request body must be a JSON object")
        return data


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FileResponse:
    """A file sent in chunks (never read whole), inline or as a download."""

    path: Path
    download: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    kind: str | None = None  # the Content-Type, when it must not be guessed from the name

    @property
    def content_type(self) -> str:
        if self.kind:
            return self.kind
        kind = mimetypes.guess_type(self.path.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or self.path.suffix in (".json", ".jsonl", ".yaml", ".toml", ".log", ".txt"):
            return "text/plain; charset=utf-8"  # never text/html from a run folder: it would run as this site
        return kind


@dataclass
class StreamResponse:
    """A response the route writes itself, for as long as it likes (server-sent events)."""

    write: Callable[[Callable[[bytes], None], Callable[[], bool]], None]  # (send, stopping)
    content_type: str = "text/event-stream; charset=utf-8"


Answer = Response | FileResponse | StreamResponse


def json_response(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, default=str, ensure_ascii=False).encode()
    return Response(status, body, "application/json; charset=utf-8")


def html_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), "text/html; charset=utf-8")


def redirect(location: str, headers: dict[str, str] | None = None) -> Response:
    return Response(303, b"", headers={"Location": location, **(headers or {})})
