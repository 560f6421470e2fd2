"""Live updates: events.jsonl tailed (torn lines wait, a replaced file is read again), every event sent once, in
order, to every viewer, a reconnecting viewer resumed where it was, several runs on one stream."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from compare_runs import make_run
from web_helpers import read_sse, running_app

from orchestrator.events import EventLog, Log, Phase, Progress, Validation, event_to_json
from orchestrator.web.live import Feed, Tail, parse_positions


def test_tail_returns_complete_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = Tail(path)
    assert tail.read() == []  # no file yet
    path.write_bytes(b'{"a": 1}\n{"b": ')
    assert tail.read() == ['{"a": 1}']
    assert tail.read() == []
    with path.open("ab") as f:
        f.write(b'2}\n\n{"c": 3}\n')
    assert tail.read() == ['{"b": 2}', '{"c": 3}']
    path.write_bytes(b'{"new": 1}\n')  # replaced by a shorter file: read from the start again
    assert tail.read() == ['{"new": 1}']


def test_feed_skips_non_events_and_marks_the_overfitting_turn(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [event_to_json(Phase("training"))]
    losses = iter([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    for step, val in ((2, 0.50), (4, 0.45), (6, 0.55)):  # validation turns up at 6 while training loss falls
        lines += [
            event_to_json(Progress(step - 1, 6, loss=next(losses))),
            event_to_json(Progress(step, 6, loss=next(losses))),
        ]
        lines.append(event_to_json(Validation(step, val)))
    path.write_text("\n".join([*lines[:3], "not json", '{"event": "nope"}', *lines[3:]]) + "\n", encoding="utf-8")
    feed = Feed(path)
    assert feed.poll()
    events = [json.loads(line) for line in feed.since(0)]
    assert [e["event"] for e in events].count("progress") == 6
    overfit = [e for e in events if e["event"] == "overfit"]
    assert overfit == [{"event": "overfit", "step": 6, "before": 4}]
    assert events.index(overfit[0]) == len(events) - 1  # right after the validation that showed it
    assert not feed.poll()


def test_positions_from_last_event_id() -> None:
    assert parse_positions(None, 2) == [0, 0]
    assert parse_positions("3,7", 2) == [3, 7]
    assert parse_positions("3", 2) == [0, 0]  # another stream's id: start over
    assert parse_positions("x,1", 2) == [0, 0]


def test_every_viewer_gets_every_event_as_it_is_written(tmp_path: Path) -> None:
    run = make_run(tmp_path, "simpletuner", [Phase("training")], status="running")
    with running_app(tmp_path / "runs", gpus=[]) as app:
        results: list[list[dict]] = [[] for _ in range(3)]

        def view(i: int) -> None:
            messages, _ = read_sse(
                app, f"/api/events?run={run.path.name}", until=lambda m: any(x["e"].get("step") == 40 for x in m)
            )
            results[i] = messages

        viewers = [threading.Thread(target=view, args=(i,)) for i in range(3)]
        for viewer in viewers:
            viewer.start()
        log = EventLog(run.events_file)
        started = time.monotonic()
        for step in range(1, 41):
            log.write(Progress(step, 40, loss=1 / step))
            time.sleep(0.01)
        log.close()
        for viewer in viewers:
            viewer.join(timeout=30)
        assert time.monotonic() - started < 10
    for messages in results:
        steps = [m["e"]["step"] for m in messages if m["e"]["event"] == "progress"]
        assert steps == list(range(1, 41))
        assert [m["n"] for m in messages] == list(range(len(messages)))
        assert {m["run"] for m in messages} == {run.path.name}


def test_a_viewer_that_reconnects_goes_on_where_it_was(tmp_path: Path) -> None:
    run = make_run(tmp_path, "kohya", [Progress(s, 10, loss=1 / s) for s in range(1, 6)], status="running")
    with running_app(tmp_path / "runs", gpus=[]) as app:
        path = f"/api/events?run={run.path.name}"
        first, ids = read_sse(app, path, until=lambda m: len(m) == 3)
        log = EventLog(run.events_file)
        for step in range(6, 11):
            log.write(Progress(step, 10, loss=1 / step))
        log.close()
        rest, _ = read_sse(app, path, headers={"Last-Event-ID": ids[-1]}, until=lambda m: len(m) == 7)
    steps = [m["e"]["step"] for m in first + rest]
    assert steps == list(range(1, 11))


def test_one_stream_follows_several_runs(tmp_path: Path) -> None:
    a = make_run(tmp_path, "kohya", [Progress(1, 2, loss=0.5), Log("info", "a")], name="a", status="running")
    b = make_run(tmp_path, "simpletuner", [Progress(1, 2, loss=0.7)], name="b", status="running")
    with running_app(tmp_path / "runs", gpus=[]) as app:
        path = f"/api/events?run={a.path.name}&run={b.path.name}"
        messages, ids = read_sse(app, path, until=lambda m: len(m) == 3)
    assert sorted((m["run"], m["n"]) for m in messages) == [(a.path.name, 0), (a.path.name, 1), (b.path.name, 0)]
    assert ids[-1].count(",") == 1


def test_a_feed_polled_from_many_threads_at_once_keeps_each_event_once_in_order(tmp_path: Path) -> None:
    """The poller thread and every new viewer's request poll the same Feed: seen in CI as a negative read length and
    a viewer that got nothing, when two polls moved the tail's offset at once."""
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"")
    feed = Feed(events)
    errors: list[Exception] = []
    writing = threading.Event()

    def poll() -> None:
        try:
            while writing.is_set():
                feed.poll()
        except Exception as exc:  # any error in a poller fails the test
            errors.append(exc)

    writing.set()
    pollers = [threading.Thread(target=poll) for _ in range(6)]
    for poller in pollers:
        poller.start()
    log = EventLog(events)
    for step in range(1, 1501):
        log.write(Progress(step, 1500, loss=1 / step))
    log.close()
    time.sleep(0.2)
    writing.clear()
    for poller in pollers:
        poller.join(timeout=30)
    feed.poll()
    assert not errors
    assert [json.loads(line)["step"] for line in feed.since(0)] == list(range(1, 1501))
