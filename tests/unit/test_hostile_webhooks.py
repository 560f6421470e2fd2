"""Spoofed webhooks against the real receiver (orchestrator/webhook.py) on loopback, and spoofed payloads through the
SimpleTuner parser: only this run's trainer, holding the run's secret, gets a payload in; nothing else is delivered
or stored; a payload of the wrong types never becomes an event that crashes a reader later."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from orchestrator.events import event_from_dict, event_to_dict
from orchestrator.webhook import MAX_BODY, MAX_CONNECTIONS, WebhookReceiver


@dataclass(frozen=True)
class Spoof:
    """One request: its headers and body are built from the receiver's real secret and job id where ``key`` /
    ``job`` say "real"; ``status`` is what the receiver must answer; nothing but a 200 is ever delivered."""

    id: str
    status: int
    key: str = "real"  # "real", "none", or a literal value
    job: str = "real"
    body: bytes | None = None  # None: a JSON payload from ``fields``
    fields: tuple[tuple[str, Any], ...] = ()
    path: str = "/hook"
    method: str = "POST"
    length: str | None = None  # a Content-Length header that lies


SPOOFS = [
    Spoof("no-api-key", 403, key="none"),
    Spoof("wrong-api-key", 403, key="guess-from-command-txt"),
    Spoof("api-key-of-another-length", 403, key="x" * 4000),
    Spoof("api-key-not-ascii", 403, key="clé"),
    Spoof("real-key-wrong-job-id", 403, job="lf-0000000000000000"),
    Spoof("real-key-no-job-id", 403, job="none"),
    Spoof("job-id-a-number", 403, fields=(("job_id", 7),), job="none"),
    Spoof("wrong-path", 404, path="/hook/../admin"),
    Spoof("query-string-is-fine", 200, path="/hook?x=1"),
    Spoof("get-instead-of-post", 501, method="GET"),
    Spoof("body-not-json", 400, body=b"{not json"),
    Spoof("body-not-utf8", 400, body=b'{"job_id": "\xff"}'),
    Spoof("body-a-json-list", 400, body=b"[1, 2, 3]"),
    Spoof("body-empty", 400, body=b""),
    Spoof("body-nan", 400, body=b'{"loss": NaN}'),
    Spoof("body-infinity", 400, body=b'{"loss": Infinity}'),
    Spoof("body-nested-deeply", 400, body=b"[" * 100_000 + b"]" * 100_000),
    Spoof("body-over-the-cap", 413, body=b'{"x": "' + b"a" * (MAX_BODY + 10) + b'"}'),
    Spoof("content-length-negative", 413, length="-5"),
    Spoof("content-length-text", 413, length="lots"),
    Spoof("content-length-huge", 413, length=str(10**12)),
    Spoof("loss-as-text-is-delivered-then-dropped-by-the-parser", 200, fields=(("message_type", "train"), ("state", {"global_step": 3, "loss": "x"}))),
]  # fmt: skip


def send(receiver: WebhookReceiver, spoof: Spoof) -> int:
    payload: dict[str, Any] = dict(spoof.fields)
    if spoof.job == "real":
        payload["job_id"] = receiver.job_id
    elif spoof.job != "none":
        payload["job_id"] = spoof.job
    body = spoof.body if spoof.body is not None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if spoof.key == "real":
        headers["X-API-Key"] = receiver.secret
    elif spoof.key != "none":
        headers["X-API-Key"] = spoof.key
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=20)
    try:
        if spoof.length is not None:
            connection.putrequest(spoof.method, spoof.path)
            for name, value in {**headers, "Content-Length": spoof.length}.items():
                connection.putheader(name, value)
            connection.endheaders()
        else:
            connection.request(spoof.method, spoof.path, body=body if spoof.method == "POST" else None, headers=headers)
        return connection.getresponse().status
    except (ConnectionError, http.client.HTTPException):  # the receiver may close on an oversized body
        return 413
    finally:
        connection.close()


@pytest.mark.parametrize("spoof", SPOOFS, ids=[s.id for s in SPOOFS])
def test_a_spoofed_webhook_is_refused_and_never_delivered(spoof: Spoof) -> None:
    delivered: list[dict[str, Any]] = []
    with WebhookReceiver(delivered.append) as receiver:
        status = send(receiver, spoof)
        assert status == spoof.status
        assert len(delivered) == (1 if status == 200 else 0)
        # the receiver still serves this run's trainer afterwards
        assert send(receiver, Spoof("after", 200, fields=(("message_type", "progress"),))) == 200


def test_held_connections_are_capped_and_the_trainer_still_gets_through() -> None:
    """60 clients open connections and send half a request each: memory stays flat (each waits on a socket, no body
    is buffered past the cap) and, once they time out or close, the trainer's next post is delivered."""
    delivered: list[dict[str, Any]] = []
    with WebhookReceiver(delivered.append) as receiver:
        held = []
        for _ in range(60):
            sock = socket.create_connection(("127.0.0.1", receiver.port), timeout=5)
            sock.sendall(
                b"POST /hook HTTP/1.1\r\nHost: x\r\nX-API-Key: "
                + receiver.secret.encode()
                + b"\r\nContent-Length: 1000\r\n\r\n{"
            )
            held.append(sock)
        time.sleep(0.5)
        busy = send(receiver, Spoof("while-held", 0, fields=(("message_type", "progress"),)))
        assert busy in (200, 503), busy  # at most MAX_CONNECTIONS bodies are read at once
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 15
        while send(receiver, Spoof("after", 0, fields=(("message_type", "progress"),))) != 200:
            assert time.monotonic() < deadline, "the receiver never recovered from held connections"
            time.sleep(0.2)
        assert threading.active_count() < 60 + MAX_CONNECTIONS + 20


# --- spoofed payloads through the SimpleTuner parser (a payload that got in: the trainer's own, or a forged one) --

PAYLOADS: list[tuple[str, dict[str, Any]]] = [
    ("loss-text", {"message_type": "train", "state": {"global_step": 3, "loss": "x"}}),
    ("step-null", {"message_type": "train", "state": {"global_step": None, "loss": 0.1}}),
    ("step-text", {"message_type": "train", "state": {"global_step": "3"}}),
    ("step-bool", {"message_type": "train", "state": {"global_step": True}}),
    ("state-a-list", {"message_type": "train", "state": [1, 2]}),
    ("total-negative", {"message_type": "train", "state": {"global_step": 3, "total_num_steps": -1}}),
    ("message-type-a-dict", {"message_type": {"a": 1}}),
    ("checkpoint-path-a-number", {"message_type": "checkpoint", "path": 7, "step": 3}),
    ("lifecycle-garbage", {"message_type": "lifecycle", "stage": ["x"], "status": None}),
    ("huge-message", {"message_type": "train", "message": "x" * 500_000}),
    ("markup-message", {"message_type": "error", "message": "[/] [bold]boom"}),
]


@pytest.mark.parametrize("payload", [p for _, p in PAYLOADS], ids=[name for name, _ in PAYLOADS])
def test_a_spoofed_payload_never_becomes_a_bad_event(payload: dict[str, Any]) -> None:
    """Whatever a payload holds, each event the parser makes reads back as a valid event (the types readers trust)."""
    from backends import base

    parser = base.get("simpletuner").parser(None)  # type: ignore[arg-type]
    for event in parser.payload(payload):
        assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event
