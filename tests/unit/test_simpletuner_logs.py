"""SimpleTuner's real logs, webhook captures and metrics files (../shared/fixtures/logs/simpletuner) -> events."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from backends.simpletuner import SimpleTunerLogParser, WebhookTranslator
from orchestrator.events import Checkpoint, Event, Failure, Phase, Progress
from orchestrator.webhook import WebhookReceiver

LOGS = "logs/simpletuner"
RUN1_LOSSES = {1: 1.09, 2: 1.13, 3: 1.2, 4: 1.14, 5: 1.15, 6: 1.22}
RUN2_LOSSES = {7: 1.14, 8: 1.12, 9: 1.19}
RUN4_LOSSES = {1: 1.22, 2: 1.06, 3: 1.16}
# Exact values the trainer posted (webhooks) and wrote (training_metrics.jsonl) for run 2, steps 7-9.
RUN2_EXACT = {7: 1.13970148563385, 8: 1.115422010421753, 9: 1.1859455108642578}


def parse(paths: list[tuple[str, Path]], chunk: int = 997, returncode: int = 0) -> list[Event]:
    parser = SimpleTunerLogParser()
    events: list[Event] = []
    for stream, path in paths:
        data = path.read_bytes()
        for i in range(0, len(data), chunk):  # odd chunking splits lines, escapes and UTF-8 characters
            events += parser.feed(data[i : i + chunk], stream)
    return events + parser.finish(returncode)


def losses(events: list[Event]) -> dict[int, float]:
    """The loss each step ended with (the last reading of it)."""
    return {e.step: e.loss for e in events if isinstance(e, Progress) and e.loss is not None}


def progress(events: list[Event]) -> list[Progress]:
    return [e for e in events if isinstance(e, Progress)]


@pytest.mark.parametrize("chunk", [1, 997, 1 << 20])
def test_run1_combined_log(fixtures_dir: Path, chunk: int) -> None:
    events = parse([("stderr", fixtures_dir / LOGS / "run1.log")], chunk)
    steps = progress(events)
    assert [p.step for p in steps if p.loss is not None] == [1, 2, 3, 4, 5, 6]
    assert {p.total for p in steps} == {6}
    assert losses(events) == RUN1_LOSSES
    assert steps[-1].step == 6 and steps[-1].loss == 1.22 and steps[-1].epoch == 1 and steps[-1].epochs == 1
    assert [(c.step, c.path) for c in events if isinstance(c, Checkpoint)] == [
        (3, "/data/job/output/checkpoint-3"),
        (6, "/data/job/output/checkpoint-6"),
    ]
    assert not [e for e in events if isinstance(e, Failure)]


def test_run1_split_streams_with_ansi(fixtures_dir: Path) -> None:
    folder = fixtures_dir / LOGS
    raw = (folder / "run1.stderr").read_bytes()
    assert b"\x1b[A" in raw and b"\r" in raw and b"\x1b[0m" in raw  # the file really has what we claim to handle
    events = parse([("stdout", folder / "run1.stdout"), ("stderr", folder / "run1.stderr")])
    assert losses(events) == RUN1_LOSSES
    assert progress(events)[-1].total == 6
    assert [c.step for c in events if isinstance(c, Checkpoint)] == [3, 6]
    assert [e.name for e in events if isinstance(e, Phase)][:2] == ["caching", "training"]


def test_first_drawing_of_a_step_carries_no_stale_loss(fixtures_dir: Path) -> None:
    events = parse([("stderr", fixtures_dir / LOGS / "run1.log")])
    step2 = [p for p in progress(events) if p.step == 2]
    assert [p.loss for p in step2] == [None, 1.13]  # tqdm first redraws step 2 with step 1's 1.09


def test_run2_resumed_log_starts_at_saved_step(fixtures_dir: Path) -> None:
    events = parse([("stderr", fixtures_dir / LOGS / "run2.log")])
    steps = progress(events)
    assert steps[0].step == 6 and steps[0].total == 9 and steps[0].loss is None
    assert losses(events) == RUN2_LOSSES
    assert steps[-1].epoch == 2 and steps[-1].epochs == 2
    assert [c.step for c in events if isinstance(c, Checkpoint)] == [9]


def test_run4_direct_launch(fixtures_dir: Path) -> None:
    events = parse([("stderr", fixtures_dir / LOGS / "run4.log")])
    assert losses(events) == RUN4_LOSSES
    assert progress(events)[-1].total == 3
    # Launched directly (python -m simpletuner.train) SimpleTuner logs no "Model weights saved"; the checkpoint is
    # recognised by the last piece of state it writes.
    assert [(c.step, c.path) for c in events if isinstance(c, Checkpoint)] == [
        (3, "/data/job/output-run4/checkpoint-3")
    ]


def test_fail1_bad_model_path(fixtures_dir: Path) -> None:
    events = parse([("stderr", fixtures_dir / LOGS / "fail1.log")], returncode=1)
    failures = [e for e in events if isinstance(e, Failure)]
    assert len(failures) == 1
    failure = failures[0]
    assert failure.kind == "model_not_found"
    assert "/data/job/does-not-exist" in failure.message
    assert failure.hint and "base_model" in failure.hint
    assert failure.log_tail and not any("\x1b" in line for line in failure.log_tail)
    assert not progress(events)


def test_training_metrics_jsonl(fixtures_dir: Path) -> None:
    events = parse([("stdout", fixtures_dir / LOGS / "training_metrics.jsonl")])
    steps = progress(events)
    assert [(p.step, p.loss) for p in steps] == list(RUN2_EXACT.items())  # system-metrics lines carry no loss
    assert all(p.epoch == 2 and p.lr == 0.0001 for p in steps)


def webhook_bodies(fixtures_dir: Path) -> list[bytes]:
    lines = (fixtures_dir / LOGS / "webhook_events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["body"].encode("utf-8") for line in lines if line.strip()]


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_webhook_events_replayed_over_http(fixtures_dir: Path) -> None:
    bodies = webhook_bodies(fixtures_dir)
    assert len(bodies) == 114
    translator = WebhookTranslator()
    events: list[Event] = []
    with WebhookReceiver(lambda payload: events.extend(translator.events(payload)), job_id="tiny-run2") as hook:
        assert hook.url.startswith("http://127.0.0.1:") and hook.port > 0
        statuses = [post(hook.url, body) for body in bodies]
    assert set(statuses) == {200}
    assert hook.accepted == 114
    steps = progress(events)
    assert [p.step for p in steps] == [6, 7, 8, 9]  # the repeated step-9 reading is dropped
    assert steps[0].loss is None and steps[0].total == 9  # "training initialisation": resumed at 6
    assert {p.step: p.loss for p in steps[1:]} == RUN2_EXACT
    assert all(p.total == 9 and p.epochs == 2 for p in steps)
    assert steps[1].eta_s == pytest.approx(1.098304331428543)
    assert steps[1].it_per_s == pytest.approx(1 / 3.8440651599999)
    assert [(c.path, c.step) for c in events if isinstance(c, Checkpoint)] == [("/data/job/output/checkpoint-9", 9)]
    phases = [e.name for e in events if isinstance(e, Phase)]
    assert phases[0] == "loading" and "caching" in phases and phases[-1] == "done"
    assert phases.index("training") < phases.index("saving")


def test_webhook_capture_through_parse_log(fixtures_dir: Path) -> None:
    """`loraforge parse-log` reads a webhook capture (JSON lines with a body) like a log."""
    events = parse([("stdout", fixtures_dir / LOGS / "webhook_events.jsonl")])
    assert {p.step: p.loss for p in progress(events) if p.loss is not None} == RUN2_EXACT


def test_receiver_rejects_another_job(fixtures_dir: Path) -> None:
    received: list[dict] = []
    with WebhookReceiver(received.append, job_id="our-job") as hook:
        statuses = {post(hook.url, body) for body in webhook_bodies(fixtures_dir)[:10]}
        assert post(hook.url, b"not json") == 400
        assert post(hook.url.replace("/hook", "/other"), json.dumps({"job_id": "our-job"}).encode()) == 404
        assert post(hook.url, json.dumps({"type": "training.status", "job_id": "our-job"}).encode()) == 200
    assert statuses == {403}
    assert hook.rejected == 10
    assert received == [{"type": "training.status", "job_id": "our-job"}]


def test_receiver_port_in_use_is_a_clear_error() -> None:
    from orchestrator.errors import LoraforgeError

    with WebhookReceiver(lambda payload: None) as first, pytest.raises(LoraforgeError) as info:
        WebhookReceiver(lambda payload: None, port=first.port).start()
    assert f"127.0.0.1:{first.port}" in info.value.message
    assert info.value.hint and "port" in info.value.hint


def test_two_receivers_get_their_own_ports() -> None:
    with WebhookReceiver(lambda p: None) as a, WebhookReceiver(lambda p: None) as b:
        assert a.port != b.port and a.job_id != b.job_id


@pytest.mark.parametrize("name", ["run1.log", "run2.log", "run4.log", "run1.stderr"])
def test_parse_log_command(fixtures_dir: Path, name: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "parse-log",
            "--backend",
            "simpletuner",
            str(fixtures_dir / LOGS / name),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    events = [json.loads(line) for line in out.stdout.splitlines()]
    last = [e for e in events if e["event"] == "progress"][-1]
    expected = {
        "run1.log": (6, 6, 1.22),
        "run2.log": (9, 9, 1.19),
        "run4.log": (3, 3, 1.16),
        "run1.stderr": (6, 6, 1.22),
    }
    assert (last["step"], last["total"], last["loss"]) == expected[name]


def test_parse_log_command_failure(fixtures_dir: Path) -> None:
    out = subprocess.run(
        [
            sys.executable, "-m", "orchestrator.cli", "parse-log", "-b", "simpletuner",
            str(fixtures_dir / LOGS / "fail1.log"), "--returncode", "1",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    last = json.loads(out.stdout.splitlines()[-1])
    assert last["event"] == "failure" and last["kind"] == "model_not_found"


def test_killed_child_is_reported_as_killed() -> None:
    parser = SimpleTunerLogParser()
    parser.feed(b"Epoch 1/1, Steps:  50%|#####     | 3/6 [00:04<00:02,  1.00it/s, lr=0.0001, step_loss=1.2]", "stderr")
    events = parser.finish(137)  # the unterminated bar line is flushed first, then the failure
    assert [e.step for e in events if isinstance(e, Progress)] == [3]
    failure = events[-1]
    assert isinstance(failure, Failure) and failure.kind == "killed"
    assert "resume" in (failure.hint or "")


def test_progress_quiet_once_webhooks_flow(fixtures_dir: Path) -> None:
    import threading

    live = threading.Event()
    live.set()
    parser = SimpleTunerLogParser(webhooks_live=live)
    data = (fixtures_dir / LOGS / "run1.log").read_bytes()
    events = parser.feed(data, "stderr") + parser.finish(0)
    assert not [e for e in events if isinstance(e, (Progress, Checkpoint, Phase))]
