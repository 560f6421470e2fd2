"""A loopback HTTP receiver for a backend's structured progress (SimpleTuner's raw webhooks).

It listens on 127.0.0.1 on a port the OS picks, accepts only JSON POSTs that carry its own job id (anything else
gets 403: another job's trainer, or a stray client, can never inject progress), and hands each payload to a
callback on the server's thread. The callback must be quick: the trainer posts synchronously and waits for the reply.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from orchestrator.errors import LoraforgeError

Payload = dict[str, Any]
MAX_BODY = 8 * 1024 * 1024


class WebhookReceiver:
    """``with WebhookReceiver(on_payload) as hook: ... hook.url, hook.job_id``."""

    def __init__(
        self, on_payload: Callable[[Payload], None], *, job_id: str | None = None, port: int = 0, path: str = "/hook"
    ) -> None:
        self.on_payload = on_payload
        self.job_id = job_id or f"lf-{secrets.token_hex(8)}"
        self.path = path
        self.accepted = 0
        self.rejected = 0
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # payloads are delivered one at a time, in arrival order

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
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                receiver._handle(self)

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
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(min(length, MAX_BODY)) if length > 0 else b""
        payload: Any = None
        try:
            payload = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            payload = None
        if request.path.split("?")[0] != self.path:
            self._reply(request, 404)
            return
        if not isinstance(payload, dict):
            self._reply(request, 400)
            return
        if payload.get("job_id") != self.job_id:
            self.rejected += 1
            self._reply(request, 403)
            return
        with self._lock:  # handled before the reply, so a sender that got 200 knows its event was taken
            self.accepted += 1
            self.on_payload(payload)
        self._reply(request, 200)

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
