"""A run folder on a disk that fills up or goes read-only: the event log stops writing (the run goes on), run.json
still records how the run ended, a LoRA write leaves no partial file. Real tmpfs mounts (root; skipped elsewhere)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from test_hostile_harness import fill, read_only, tmpfs

from orchestrator.events import EventLog, Log, Progress, read_events
from orchestrator.runs import RunDir, disk_failure


def test_the_event_log_stops_writing_on_a_full_disk_and_keeps_the_error(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        log = EventLog(disk / "events.jsonl")
        log.write(Progress(step=1, total=10, loss=0.5))
        fill(disk)
        for step in range(2, 2000):  # a few KiB of buffered lines meet the full disk
            log.write(Log("info", f"step {step} " + "x" * 200))
        log.close()
        assert log.error is not None and log.error.errno == errno.ENOSPC
        assert log.error.filename == str(disk / "events.jsonl")
        assert read_events(disk / "events.jsonl")[0] == Progress(step=1, total=10, loss=0.5)


def test_the_event_log_on_a_read_only_disk_never_raises(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        read_only(disk)
        log = EventLog(disk / "run" / "events.jsonl")
        log.write(Progress(step=1))
        log.close()
        assert log.error is not None and log.error.errno == errno.EROFS


def test_run_json_records_the_end_of_a_run_on_a_full_disk(tmp_path: Path) -> None:
    """Not even run.json's small temp file fits: it is rewritten in the blocks it already has."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        run = RunDir(disk / "me-20260101-000000")
        run.path.mkdir()
        run.update_state(backend="kohya", status="running", created=1.0)
        fill(disk)
        run.update_state(status="failed", returncode=130, step=7, total=10, seconds=12.5, lora=None)
        state = json.loads(run.state_file.read_text())
        assert state == {
            "backend": "kohya", "status": "failed", "created": 1.0, "returncode": 130, "step": 7, "total": 10,
            "seconds": 12.5, "lora": None,
        }  # fmt: skip
        assert not run.state_file.with_suffix(".tmp").exists()


def test_run_json_that_cannot_grow_on_a_full_disk_is_an_error_naming_it(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        run = RunDir(disk / "me-20260101-000000")
        run.path.mkdir()
        run.update_state(status="running")
        fill(disk)
        with pytest.raises(OSError) as raised:
            run.update_state(notes="x" * 100_000)  # far more than the block run.json holds
        assert raised.value.errno == errno.ENOSPC
        assert json.loads(run.state_file.read_text()) == {"status": "running"}  # the old state, whole


def test_the_disk_failure_names_the_folder_and_the_fix(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "me-20260101-000000")
    failure = disk_failure(OSError(errno.ENOSPC, "No space left on device", str(run.logs / "stderr.log")), run)
    assert failure.kind == "disk_full"
    assert str(run.path) in failure.message and "no space left" in failure.message
    assert failure.hint is not None and "loraforge resume" in failure.hint


def test_a_trainer_that_dies_of_a_full_disk_is_reported_with_the_run_folder(tmp_path: Path) -> None:
    """The trainer may hit the full disk before loraforge's log does, with a message that names no file (sd-scripts:
    `OSError: [Errno 28] No space left on device` opening its train_state.json): the failure still says where."""
    from backends.kohya.logs import KohyaLogParser
    from orchestrator.events import Failure
    from orchestrator.training import _placed

    parser = KohyaLogParser()
    log = b"Traceback (most recent call last):\n  File 'x.py', line 1\nOSError: [Errno 28] No space left on device\n"
    parser.feed(log, "stderr")
    (failure,) = [e for e in parser.finish(1) if isinstance(e, Failure)]
    assert failure.kind == "disk_full" and "runs" not in failure.message
    run = RunDir(tmp_path / "runs" / "job-1")
    placed = _placed(failure, run)
    assert str(run.path) in placed.message and "No space left on device" in placed.message
    assert placed.log_path == str(run.logs / "stderr.log") and placed.hint == failure.hint
