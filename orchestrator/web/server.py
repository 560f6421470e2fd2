"""The HTTP server: the standard library's threading server, one thread per connection, HTTP/1.1 keep-alive.

Every request passes the gate (auth.py: host, token, cross-site checks) before the route table sees it; without
the token nothing answers but 401, unknown paths included. Every response carries headers that keep the browser
strict: a Content-Security-Policy that allows only this server's own scripts and styles (no inline script, nothing
fetched from elsewhere), no MIME sniffing, no framing, no referrer.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from orchestrator.errors import LoraforgeError
from orchestrator.web.auth import parse_cookies
from orchestrator.web.responses import (
    Answer,
    FileResponse,
    Headers,
    HttpError,
    Request,
    Response,
    StreamResponse,
    html_response,
    json_response,
    redirect,
)

if TYPE_CHECKING:
    from orchestrator.web.app import App

log = logging.getLogger("loraforge.web")

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
DRAIN_LIMIT = 256 * 1024  # an unread request body up to this is read and dropped; beyond, the connection closes


class WebServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.stopping = threading.Event()
        super().__init__(address, Handler)


class _Body:
    """The request body, never read past its Content-Length; remembers how much is left unread."""

    def __init__(self, raw: BinaryIO | io.BufferedIOBase, length: int) -> None:
        self.raw = raw
        self.left = length

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.raw.read(size) if size > 0 else b""
        self.left -= len(data)
        return data


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "loraforge"
    sys_version = ""
    timeout = 120  # an idle keep-alive connection is closed after this
    server: WebServer

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
        log.debug("%s %s", self.address_string(), format % args)

    def _handle(self) -> None:
        app = self.server.app
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        if self.headers.get("Transfer-Encoding"):
            self._send(Response(411, b"send a Content-Length"), close=True)
            return
        try:
            length = max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            self._send(Response(400, b"bad Content-Length"), close=True)
            return
        body = _Body(self.rfile, length)
        headers = Headers(self.headers.items())
        answer = self._gate(app, split.path, query, headers)
        if answer is None:
            answer = self._route(app, split.path, query, headers, body)
        close = body.left > DRAIN_LIMIT
        if body.left and not close:
            body.read()
        self._send(answer, close=close)

    def _gate(self, app: App, path: str, query: dict[str, list[str]], headers: Headers) -> Answer | None:
        guard = app.guard
        if not guard.host_ok(headers.get("Host")):
            return Response(403, b"this server answers only to 127.0.0.1 or localhost\n")
        tokens = query.get("token")
        token = tokens[-1] if tokens else None
        via = guard.authenticate(headers, parse_cookies(headers.get("Cookie")), token)
        if via is None:
            return _error(path, HttpError(401, "a token is needed", "open the URL `loraforge serve` printed"))
        if via == "query" and self.command == "GET":  # the printed URL: keep the token in a cookie, drop it from view
            rest = {key: values for key, values in query.items() if key != "token"}
            location = quote(path) + (f"?{urlencode(rest, doseq=True)}" if rest else "")
            return redirect(location, {"Set-Cookie": guard.cookie_header()})
        if not guard.cross_site_ok(self.command, headers, via):
            return _error(path, HttpError(403, "refused: a cross-site request", "use the app's own pages"))
        return None

    def _route(self, app: App, path: str, query: dict[str, list[str]], headers: Headers, body: _Body) -> Answer:
        try:
            handler, params = app.routes.match(self.command, path)
            request = Request(self.command, path, query, headers, params, body, body.left)  # type: ignore[arg-type]
            return handler(request)
        except HttpError as exc:
            return _error(path, exc)
        except LoraforgeError as exc:
            return _error(path, HttpError(400, exc.message, exc.hint))
        except Exception:
            log.error("bug in loraforge serve, on %s %s:\n%s", self.command, path, traceback.format_exc())
            return _error(path, HttpError(500, "internal error (a bug in loraforge: see the server's output)"))

    def _send(self, answer: Answer, *, close: bool = False) -> None:
        if isinstance(answer, StreamResponse):
            self._stream(answer)
            return
        self.send_response(answer.status if isinstance(answer, Response) else 200)
        for key, value in SECURITY_HEADERS.items():
            self.send_header(key, value)
        self.send_header("Cache-Control", "no-store")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        if isinstance(answer, FileResponse):
            self._send_file(answer)
            return
        for key, value in answer.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def _send_file(self, answer: FileResponse) -> None:
        with answer.path.open("rb") as f:
            size = answer.path.stat().st_size
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(size))
            if answer.download:
                self.send_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(answer.path.name)}")
            self.send_header("Content-Security-Policy", "sandbox")  # a file opened by itself runs nothing
            for key, value in answer.headers.items():
                self.send_header(key, value)
            self.end_headers()
            while chunk := f.read(256 * 1024):
                self.wfile.write(chunk)

    def _stream(self, answer: StreamResponse) -> None:
        """Server-sent events: no length, so the connection ends with the stream."""
        self.close_connection = True
        self.send_response(200)
        for key, value in SECURITY_HEADERS.items():
            self.send_header(key, value)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        self.wfile.flush()

        def send(data: bytes) -> None:
            self.wfile.write(data)
            self.wfile.flush()

        with contextlib.suppress(OSError):  # the viewer left (a broken pipe, a reset, a send that timed out)
            answer.write(send, self.server.stopping.is_set)


def _error(path: str, exc: HttpError) -> Response:
    """An error as JSON for the API, as a short page for a browser."""
    if path.startswith("/api/"):
        return json_response({"error": exc.message, "hint": exc.hint}, exc.status)
    from html import escape

    hint = f"<p>{escape(exc.hint)}</p>" if exc.hint else ""
    page = f'<!doctype html><meta charset="utf-8"><title>{exc.status}</title><h1>{escape(exc.message)}</h1>{hint}'
    return html_response(page, exc.status)
