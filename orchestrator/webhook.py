"""A loopback HTTP receiver for a backend's structured progress (SimpleTuner's raw webhooks).

It listens on 127.0.0.1 on a port the OS picks and accepts only JSON POSTs that carry this run's secret (the
``X-API-Key`` header SimpleTuner sends from its owner-only webhook config) and its job id: another job's trainer, a
local user who read the run folder's job id, or a stray client gets 403 and can never inject progress. Bodies are
capped, connections are capped and time out, and each accepted payload goes to a callback on the server's thread
(one at a time); rejected ones are counted, never stored. The callback must be quick: the trainer posts
synchronously and waits for the reply.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from orchestrator.errors import LoraforgeError

Payload = dict[str, Any]
MAX_BODY = 1024 * 1024  # SimpleTuner's largest payloads (validation images as base64) stay well under this
MAX_CONNECTIONS = 8  # one trainer posts one request at a time; more is someone else
TIMEOUT_S = 10.0  # a sender that stalls mid-request is dropped


def webhook_port() -> int:
    """$LORAFORGE_WEBHOOK_PORT (a fixed port, for firewalls), else 0: the OS picks a free one."""
    raw = os.environ.get("LORAFORGE_WEBHOOK_PORT") or "0"
    if not raw.isdigit() or int(raw) > 65535:
        raise LoraforgeError(
            f"LORAFORGE_WEBHOOK_PORT={raw[:20]!r} is not a port number", "set 1-65535, or unset it (any free port)"
        )
    return int(raw)


class WebhookReceiver:
    """``with WebhookReceiver(on_payload) as hook: ... hook.url, hook.job_id``."""

    def __init__(
        self, on_payload: Callable[[Payload], None], *, job_id: str | None = None, port: int = 0, path: str = "/hook"
    ) -> None:
        self.on_payload = on_payload
        self.job_id = job_id or f"lf-{secrets.token_hex(8)}"
        self.secret = secrets.token_urlsafe(24)
        self.path = path
        self.accepted = 0
        self.rejected = 0
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # payloads are delivered one at a time, in arrival order
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    @property
    def port(self) -> int:
        assert self._server is not None, "receiver not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = TIMEOUT_S

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                if not receiver._slots.acquire(blocking=False):
                    receiver.rejected += 1
                    receiver._reply(self, 503)
                    return
                try:
                    receiver._handle(self)
                finally:
                    receiver._slots.release()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence per-request lines
                return

        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        except OSError as exc:
            raise LoraforgeError(
                f"cannot listen for progress webhooks on 127.0.0.1:{self._port}: {exc.strerror or exc}",
                "another program holds that port: choose a free one, or 0 to let the system pick",
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)
        self._thread.start()
        return self

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        if request.path.split("?")[0] != self.path:
            self._refuse(request, 404)
            return
        key = request.headers.get("X-API-Key") or ""
        if not hmac.compare_digest(key.encode("utf-8", "replace"), self.secret.encode()):
            self._refuse(request, 403)
            return
        raw_length = request.headers.get("Content-Length") or "0"
        if not raw_length.isdigit() or int(raw_length) > MAX_BODY:
            self._refuse(request, 413)
            return
        length = int(raw_length)
        body = request.rfile.read(length) if length else b""
        try:
            payload = json.loads(body.decode("utf-8"), parse_constant=_no_constant) if body else None
        except (UnicodeDecodeError, ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            self._refuse(request, 400)
            return
        if payload.get("job_id") != self.job_id:
            self._refuse(request, 403)
            return
        with self._lock:  # handled before the reply, so a sender that got 200 knows its event was taken
            self.accepted += 1
            self.on_payload(payload)
        self._reply(request, 200)

    def _refuse(self, request: BaseHTTPRequestHandler, status: int) -> None:
        self.rejected += 1
        request.close_connection = True
        self._reply(request, status)

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int) -> None:
        request.send_response(status)
        request.send_header("Content-Length", "0")
        request.end_headers()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: never a progress reading
