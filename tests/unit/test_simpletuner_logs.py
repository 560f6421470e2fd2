"""SimpleTuner's real logs, webhook captures and metrics files (../shared/fixtures/logs/simpletuner) -> events, and
webhook payloads: only this run's, authenticated and well-typed, ever become events."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from backends.simpletuner import SimpleTunerLogParser, translate
from orchestrator.events import PHASES, Checkpoint, Event, Failure, Log, Phase, Progress
from orchestrator.webhook import WebhookReceiver

LOGS = "logs/simpletuner"
RUN1_LOSSES = {1: 1.09, 2: 1.13, 3: 1.2, 4: 1.14, 5: 1.15, 6: 1.22}
RUN2_LOSSES = {7: 1.14, 8: 1.12, 9: 1.19}
RUN4_LOSSES = {1: 1.22, 2: 1.06, 3: 1.16}
# Exact values the trainer posted (webhooks) and wrote (training_metrics.jsonl) for run 2, steps 7-9.
RUN2_EXACT = {7: 1.13970148563385, 8: 1.115422010421753, 9: 1.1859455108642578}


def parse(paths: list[tuple[str, Path]], chunk: int = 997, returncode: int | None = 0) -> list[Event]:
    parser = SimpleTunerLogParser()
    events: list[Event] = []
    for stream, path in paths:
        data = path.read_bytes()
        for i in range(0, len(data), chunk):  # odd chunking splits lines, escapes and UTF-8 characters
            events += parser.feed(data[i : i + chunk], stream)
    return events + parser.finish(returncode)


def progress(events: list[Event]) -> list[Progress]:
    return [e for e in events if isinstance(e, Progress)]


def losses(events: list[Event]) -> dict[int, float | None]:
    steps = progress(events)
    assert [p.step for p in steps] == sorted({p.step for p in steps}), "one Progress per step, in order"
    return {p.step: p.loss for p in steps}


def phases(events: list[Event]) -> list[str]:
    return [e.name for e in events if isinstance(e, Phase)]


@pytest.mark.parametrize("chunk", [1, 997, 1 << 20])
def test_run1_combined_log(fixtures_dir: Path, chunk: int) -> None:
    events = parse([("stderr", fixtures_dir / LOGS / "run1.log")], chunk)
    assert losses(events) == RUN1_LOSSES  # each step once, with its own loss (never the previous step's)
    steps = progress(events)
    assert {p.total for p in steps} == {6}
    assert (steps[-1].epoch, steps[-1].epochs, steps[-1].lr) == (1, 1, 0.0001)
    assert [(c.step, c.path) for c in events if isinstance(c, Checkpoint)] == [
        (3, "/data/job/output/checkpoint-3"),
        (6, "/data/job/output/checkpoint-6"),
    ]
    assert phases(events) == ["loading", "caching", "training", "saving"]
    assert not [e for e in events if isinstance(e, Failure)]


def test_run1_split_streams_with_ansi(fixtures_dir: Path) -> None:
    folder = fixtures_dir / LOGS
    raw = (folder / "run1.stderr").read_bytes()
    assert b"\x1b[A" in raw and b"\r" in raw and b"\x1b[0m" in raw  # the file really has what we claim to handle
    events = parse([("stdout", folder / "run1.stdout"), ("stderr", folder / "run1.stderr")])
    assert losses(events) == RUN1_LOSSES
    assert progress(events)[-1].total == 6
    assert [c.step for c in events if isinstance(c, Checkpoint)] == [3, 6]
    assert [PHASES.index(p) for p in phases(events)] == sorted(PHASES.index(p) for p in phases(events))


def test_a_step_drawn_first_with_the_previous_loss_is_read_once_with_its_own() -> None:
    parser = SimpleTunerLogParser()
    bar = "Epoch 1/1, Steps:  {p}%|#| {n}/3 [00:0{n}<00:02,  1.00it/s{postfix}]\r"
    draws = [
        bar.format(p=0, n=0, postfix=""),  # the bar opens: no step has run
        bar.format(p=33, n=1, postfix=""),  # update(1) before any postfix
        bar.format(p=33, n=1, postfix=", lr=0.0001, step_loss=0.9"),
        bar.format(p=67, n=2, postfix=", lr=0.0001, step_loss=0.9"),  # step 2 drawn with step 1's loss
        bar.format(p=67, n=2, postfix=", lr=0.0001, step_loss=0.7"),
        bar.format(p=67, n=2, postfix=", lr=0.0001, step_loss=0.7"),  # a clock redraw
        bar.format(p=100, n=3, postfix=", lr=0.0001, step_loss=0.6"),  # drawn once (a fast step): read at the end
    ]
    events = [e for draw in draws for e in parser.feed(draw.encode(), "stderr")] + parser.finish(0)
    assert losses(events) == {1: 0.9, 2: 0.7, 3: 0.6}


def test_run2_resumed_log_starts_after_the_saved_step(fixtures_dir: Path) -> None:
    events = parse([("stderr", fixtures_dir / LOGS / "run2.log")])
    assert losses(events) == RUN2_LOSSES  # the bar's opening draw at 6/9 is where it resumed, not a step
    steps = progress(events)
    assert steps[0].total == 9 and (steps[-1].epoch, steps[-1].epochs) == (2, 2)
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


@pytest.mark.parametrize("returncode", [1, None])
def test_fail1_bad_model_path(fixtures_dir: Path, returncode: int | None) -> None:
    """The same failure with the exit status and from the log alone (it ends in an uncaught traceback)."""
    events = parse([("stderr", fixtures_dir / LOGS / "fail1.log")], returncode=returncode)
    (failure,) = [e for e in events if isinstance(e, Failure)]
    assert failure.kind == "model_not_found"
    assert failure.message == "SimpleTuner failed: OSError: base model not found: /data/job/does-not-exist"
    assert failure.hint and "base_model" in failure.hint
    assert failure.log_tail and not any("\x1b" in line for line in failure.log_tail)
    assert not progress(events)


@pytest.mark.parametrize("name", ["run1.log", "run2.log", "run4.log"])
def test_a_finished_log_replayed_without_its_exit_status_is_no_failure(fixtures_dir: Path, name: str) -> None:
    events = parse([("stderr", fixtures_dir / LOGS / name)], returncode=None)
    assert progress(events) and not [e for e in events if isinstance(e, Failure)]


def test_a_traceback_the_run_survived_is_no_failure_on_replay() -> None:
    parser = SimpleTunerLogParser()
    text = (
        'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: a caught warning\n'
        "Epoch 1/1, Steps:  50%|#| 1/2 [00:01<00:01,  1.00it/s, lr=0.0001, step_loss=0.5]\r"
        "Epoch 1/1, Steps: 100%|#| 2/2 [00:02<00:00,  1.00it/s, lr=0.0001, step_loss=0.5]\r"
        "Epoch 1/1, Steps: 100%|#| 2/2 [00:02<00:00,  1.00it/s, lr=0.0001, step_loss=0.4]\n"
    )
    assert not [e for e in parser.feed(text.encode(), "stderr") + parser.finish(None) if isinstance(e, Failure)]
    late = SimpleTunerLogParser()  # the bar's closing redraw of the same step after the traceback: still failed
    text = text.replace("ValueError: a caught warning\n", "") + "Traceback (most recent call last):\nOSError: disk\n"
    text += "Epoch 1/1, Steps: 100%|#| 2/2 [00:02<00:00,  1.00it/s, lr=0.0001, step_loss=0.4]\n"
    (failure,) = [e for e in late.feed(text.encode(), "stderr") + late.finish(None) if isinstance(e, Failure)]
    assert failure.message == "SimpleTuner failed: OSError: disk"


def test_training_metrics_jsonl(fixtures_dir: Path) -> None:
    events = parse([("stdout", fixtures_dir / LOGS / "training_metrics.jsonl")])
    steps = progress(events)
    assert [(p.step, p.loss) for p in steps] == list(RUN2_EXACT.items())  # system-metrics lines carry no loss
    assert all(p.epoch == 2 and p.lr == 0.0001 for p in steps)


def webhook_bodies(fixtures_dir: Path) -> list[bytes]:
    lines = (fixtures_dir / LOGS / "webhook_events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["body"].encode("utf-8") for line in lines if line.strip()]


def post(url: str, body: bytes, key: str | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key is not None else {})}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_webhook_events_replayed_over_http(fixtures_dir: Path) -> None:
    bodies = webhook_bodies(fixtures_dir)
    assert len(bodies) == 114
    parser = SimpleTunerLogParser()
    events: list[Event] = []
    with WebhookReceiver(lambda payload: events.extend(parser.payload(payload)), job_id="tiny-run2") as hook:
        assert hook.url.startswith("http://127.0.0.1:") and hook.port > 0
        statuses = [post(hook.url, body, hook.secret) for body in bodies]
    assert set(statuses) == {200}
    assert hook.accepted == parser.accepted == 114 and parser.rejected == 0
    steps = progress(events)
    # "Running training" (resumed at 6) is not a step; the repeated step-9 reading is reported once
    assert losses(events) == RUN2_EXACT
    assert all(p.total == 9 and p.epochs == 2 for p in steps)
    assert steps[0].eta_s == pytest.approx(1.098304331428543)
    assert steps[0].it_per_s == pytest.approx(1 / 3.8440651599999)
    assert [(c.path, c.step) for c in events if isinstance(c, Checkpoint)] == [("/data/job/output/checkpoint-9", 9)]
    assert phases(events) == ["loading", "caching", "training", "saving"]  # "done" is the run's own


def test_webhook_capture_read_like_a_log(fixtures_dir: Path) -> None:
    """`loraforge parse-log` reads a webhook capture (JSON lines with a body) like a log."""
    events = parse([("stdout", fixtures_dir / LOGS / "webhook_events.jsonl")])
    assert losses(events) == RUN2_EXACT


STEP = {
    "type": "training.status",
    "job_id": "lf-job",
    "progress": {"current": 1, "total": 2, "eta_seconds": 1.5, "metrics": {"loss": 0.5, "learning_rate": 1e-4}},
}


def spoiled(path: list[str], value: Any) -> dict[str, Any]:
    payload = copy.deepcopy(STEP)
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return payload


def test_spoofed_webhooks_never_become_events() -> None:
    """No secret, a wrong secret, or the right secret with a loss that is not a number: no event, ever."""
    parser = SimpleTunerLogParser()
    events: list[Event] = []
    with WebhookReceiver(lambda payload: events.extend(parser.payload(payload)), job_id="lf-job") as hook:
        body = json.dumps(STEP).encode()
        assert post(hook.url, body) == 403
        assert post(hook.url, body, "not-" + hook.secret) == 403
        assert post(hook.url, json.dumps(spoiled(["progress", "metrics", "loss"], "x")).encode(), hook.secret) == 200
        assert events == [] and (parser.accepted, parser.rejected) == (0, 1)
        assert not parser.live  # a dropped payload does not silence the trainer's own output either
        assert post(hook.url, body, hook.secret) == 200
    assert hook.rejected == 2
    assert progress(events) == [Progress(step=1, total=2, loss=0.5, lr=1e-4, eta_s=1.5)]


@pytest.mark.parametrize(
    "payload",
    [
        spoiled(["progress", "metrics", "loss"], "x"),
        spoiled(["progress", "metrics", "loss"], float("nan")),
        spoiled(["progress", "metrics", "loss"], float("inf")),
        spoiled(["progress", "metrics", "loss"], True),
        spoiled(["progress", "metrics"], [0.5]),
        spoiled(["progress"], [1, 2]),
        spoiled(["progress", "current"], -1),
        spoiled(["progress", "current"], 10**12),
        spoiled(["progress", "current"], 2.5),
        spoiled(["progress", "current"], "3"),
        spoiled(["progress", "total"], {"n": 2}),
        spoiled(["progress", "eta_seconds"], "soon"),
        spoiled(["progress", "metrics", "seconds_per_step"], [1]),
        spoiled(["type"], 7),
        {"type": "training.status", "data": {"global_step": "3"}},
        {"type": "training.checkpoint", "checkpoint": "/out/checkpoint-3"},
        {"type": "training.checkpoint", "checkpoint": {"path": 3}},
        {"type": "lifecycle.stage", "stage": ["init_vae_cache", "running"]},
        {"type": "lifecycle.stage", "stage": {"key": "init_vae_cache", "status": 1}},
        {"type": "log.message", "severity": "error", "message": {"text": "boom"}},
        {"type": "log.message", "severity": ["error"], "message": "boom"},
    ],
)
def test_a_payload_with_a_field_of_the_wrong_type_is_dropped_and_counted(payload: dict[str, Any]) -> None:
    parser = SimpleTunerLogParser()
    assert parser.payload(payload) == []
    assert (parser.accepted, parser.rejected, parser.live) == (0, 1, False)
    assert parser.payload(STEP) == [Phase("training"), Progress(step=1, total=2, loss=0.5, lr=1e-4, eta_s=1.5)]


def test_payload_translation() -> None:
    stage = {"type": "lifecycle.stage", "stage": {"key": "init_vae_cache", "status": "running"}}
    assert translate(stage) == [Phase("caching")]
    done = {"type": "lifecycle.stage", "stage": {"key": "training_complete", "status": "completed"}}
    assert translate(done) == []  # "done" is the orchestrator's, once it has the LoRA
    saving = {"type": "lifecycle.stage", "stage": {"key": "checkpoint_save", "status": "running"}}
    assert translate(saving) == []  # training goes on after a checkpoint
    checkpoint = {"type": "training.checkpoint", "checkpoint": {"path": "/out/checkpoint-12/"}}
    assert translate(checkpoint) == [Checkpoint("/out/checkpoint-12/", 12)]
    error = {"type": "log.message", "severity": "error", "message": "x" * 5000}
    assert translate(error) == [Log("error", "x" * 2000)]
    epoch = spoiled(["progress", "metrics", "epoch"], 2.0)  # SimpleTuner writes some counts as floats
    assert translate(epoch)[1] == Progress(step=1, total=2, epoch=2, loss=0.5, lr=1e-4, eta_s=1.5)
    assert translate({"type": "notification", "message": "hello"}) == []


def test_receiver_rejects_another_job(fixtures_dir: Path) -> None:
    received: list[dict] = []
    with WebhookReceiver(received.append, job_id="our-job") as hook:
        statuses = {post(hook.url, body, hook.secret) for body in webhook_bodies(fixtures_dir)[:10]}
        assert post(hook.url, b"not json", hook.secret) == 400
        assert post(hook.url.replace("/hook", "/other"), json.dumps({"job_id": "our-job"}).encode(), hook.secret) == 404
        assert post(hook.url, json.dumps({"type": "training.status", "job_id": "our-job"}).encode(), hook.secret) == 200
    assert statuses == {403}
    assert hook.rejected == 12
    assert received == [{"type": "training.status", "job_id": "our-job"}]


def test_receiver_port_in_use_is_a_clear_error() -> None:
    from orchestrator.errors import LoraforgeError

    with WebhookReceiver(lambda payload: None) as first, pytest.raises(LoraforgeError) as info:
        WebhookReceiver(lambda payload: None, port=first.port).start()
    assert f"127.0.0.1:{first.port}" in info.value.message
    assert info.value.hint and "port" in info.value.hint


def test_two_receivers_get_their_own_ports_and_secrets() -> None:
    with WebhookReceiver(lambda p: None) as a, WebhookReceiver(lambda p: None) as b:
        assert a.port != b.port and a.job_id != b.job_id and a.secret != b.secret


def test_progress_comes_from_webhooks_once_they_flow(fixtures_dir: Path) -> None:
    """The first accepted payload silences the output's progress, phases and checkpoints; failures still count."""
    parser = SimpleTunerLogParser()
    assert parser.payload({"type": "notification", "job_id": "j", "message": "launched"}) == []
    events = parser.feed((fixtures_dir / LOGS / "run1.log").read_bytes(), "stderr")
    assert not [e for e in events if isinstance(e, (Progress, Checkpoint, Phase))]
    events = parser.feed((fixtures_dir / LOGS / "fail1.log").read_bytes(), "stderr") + parser.finish(1)
    assert [e.kind for e in events if isinstance(e, Failure)] == ["model_not_found"]


@pytest.mark.parametrize("name", ["run1.log", "run2.log", "run4.log", "run1.stderr"])
def test_parse_log_command(fixtures_dir: Path, name: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "parse-log", "--backend", "simpletuner",
         str(fixtures_dir / LOGS / name)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    events = [json.loads(line) for line in out.stdout.splitlines()]
    last = [e for e in events if e["event"] == "progress"][-1]
    expected = {
        "run1.log": (6, 6, 1.22),
        "run2.log": (9, 9, 1.19),
        "run4.log": (3, 3, 1.16),
        "run1.stderr": (6, 6, 1.22),
    }
    assert (last["step"], last["total"], last["loss"]) == expected[name]
    assert not [e for e in events if e["event"] == "failure"]


@pytest.mark.parametrize("returncode", [["--returncode", "1"], []])
def test_parse_log_command_failure(fixtures_dir: Path, returncode: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "parse-log", "-b", "simpletuner",
         str(fixtures_dir / LOGS / "fail1.log"), *returncode],
        capture_output=True, text=True,
    )  # fmt: skip
    failures = [e for e in map(json.loads, out.stdout.splitlines()) if e["event"] == "failure"]
    assert [(e["kind"], "OSError" in e["message"]) for e in failures] == [("model_not_found", True)], out.stderr


def test_killed_child_is_reported_as_killed() -> None:
    parser = SimpleTunerLogParser()
    parser.feed(b"Epoch 1/1, Steps:  50%|#####     | 3/6 [00:04<00:02,  1.00it/s, lr=0.0001, step_loss=1.2]", "stderr")
    events = parser.finish(137)  # the unterminated bar line is flushed first, then the failure
    assert [(e.step, e.loss) for e in progress(events)] == [(3, 1.2)]
    failure = events[-1]
    assert isinstance(failure, Failure) and failure.kind == "killed"
    assert "resume" in (failure.hint or "")


def test_a_loss_that_is_not_a_number_is_no_reading() -> None:
    parser = SimpleTunerLogParser()
    bar = "Epoch 1/1, Steps:  50%|#| {n}/2 [00:01<00:01,  1.00it/s, lr=0.0001, step_loss={loss}]\r"
    text = bar.format(n=1, loss="nan") + bar.format(n=1, loss="nan") + bar.format(n=2, loss="0.5") * 2
    events = parser.feed(text.encode(), "stderr") + parser.finish(0)
    assert losses(events) == {2: 0.5}


def test_an_endless_line_is_read_capped_the_same_in_any_chunking() -> None:
    from backends.simpletuner.logs import MAX_LINE

    data = b"[RANK 0] [ERROR] " + b"x" * (3 * MAX_LINE) + b"\nValueError: after\n"
    whole = SimpleTunerLogParser()
    expected = whole.feed(data, "stdout") + whole.finish(None)
    assert [len(e.text) for e in expected if isinstance(e, Log)] == [MAX_LINE - len("[RANK 0] [ERROR] ")]
    chunked = SimpleTunerLogParser()
    events = [e for i in range(0, len(data), 65536) for e in chunked.feed(data[i : i + 65536], "stdout")]
    assert events + chunked.finish(None) == expected
    assert max(len(rest) for rest in chunked._buffers.values()) <= MAX_LINE
