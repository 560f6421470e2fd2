from __future__ import annotations

import json
from pathlib import Path

from orchestrator.events import (
    Checkpoint,
    EventLog,
    Failure,
    Finished,
    Log,
    Phase,
    Progress,
    Sample,
    Validation,
    event_from_dict,
    event_to_json,
    progress,
    read_events,
)

ALL = [
    Phase("training"),
    Progress(3, 10, 1, 2, 0.12, 1e-4, 1.5, 4.0),
    Checkpoint("/x/ckpt", 3),
    Sample("/x/s.png", 3, "photo of ohwx"),
    Validation(3, 0.2),
    Log("warning", "ünïcode"),
    Failure("out_of_memory", "CUDA out of memory", "lower the batch size", ["a", "b"], "/x/stderr.log"),
    Finished("/x/lora.safetensors", 12.5),
]


def test_every_event_round_trips_through_json() -> None:
    for event in ALL:
        assert event_from_dict(json.loads(event_to_json(event))) == event


def test_failure_keeps_its_kind_field_and_type_tag() -> None:
    data = json.loads(event_to_json(ALL[6]))
    assert data["event"] == "failure" and data["kind"] == "out_of_memory"


def test_event_log_survives_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    for event in ALL:
        log.write(event)
    log.close()
    with path.open("a") as f:
        f.write('{"event": "progress", "ste')  # a killed writer
    assert read_events(path) == ALL


def test_the_parsers_fast_progress_is_the_same_event() -> None:
    fast = progress(3, 10, 1, 2, 0.5, None, 1.25, 4.0)
    slow = Progress(step=3, total=10, epoch=1, epochs=2, loss=0.5, lr=None, it_per_s=1.25, eta_s=4.0)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert event_to_json(fast) == event_to_json(slow)
