"""The run watcher: sample images and metrics lines a backend writes during a run become events, once each."""

from __future__ import annotations

import json
import re
from pathlib import Path

from orchestrator.events import Sample, Validation
from orchestrator.watch import MetricsFile, RunWatcher, SampleFolder

KOHYA = re.compile(r"^tiny_(?P<step>\d{6})_(?P<index>\d{2})_\d{14}")


def test_new_samples_reported_once_with_their_step_and_prompt(tmp_path: Path) -> None:
    folder = tmp_path / "sample"
    watcher = RunWatcher([SampleFolder(folder, KOHYA)], ["a red car", "a forest"], interval=0)
    assert watcher.poll() == []  # the folder does not exist yet
    folder.mkdir()
    (folder / "tiny_000002_01_20261129004018_42.png").write_bytes(b"png")
    (folder / "tiny_000002_00_20261129004018_42.png").write_bytes(b"png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "other_000002_00_20261129004018.png").write_bytes(b"another run's name")
    events = watcher.poll()
    assert [(e.step, e.prompt, Path(e.path).name[:14]) for e in events] == [
        (2, "a red car", "tiny_000002_00"),
        (2, "a forest", "tiny_000002_01"),
    ]
    assert watcher.poll() == []
    (folder / "tiny_000004_00_20261129004111_42.png").write_bytes(b"png")
    assert watcher.poll() == [Sample(str(folder / "tiny_000004_00_20261129004111_42.png"), 4, "a red car")]


def test_validation_loss_from_complete_metrics_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "training_metrics.jsonl"
    watcher = RunWatcher([MetricsFile(path, "loss/val/")], [], interval=0)
    line = {"step": 2, "metrics": {"train_loss": 1.1, "loss/val/a": 0.9, "loss/val/b": 0.7}}
    path.write_text(json.dumps({"step": 1, "metrics": {"train_loss": 1.2}}) + "\n" + json.dumps(line) + "\n")
    assert watcher.poll() == [Validation(step=2, loss=0.8)]  # the mean over held-out sets
    with path.open("a") as f:
        f.write('{"step": 4, "metrics": {"loss/val/a": 0.6')  # still being written
    assert watcher.poll() == []
    with path.open("a") as f:
        f.write("}}\nnot json\n")
    assert watcher.poll() == [Validation(step=4, loss=0.6)]


def test_a_resumed_run_does_not_report_earlier_files_again(tmp_path: Path) -> None:
    folder = tmp_path / "validation_images"
    folder.mkdir()
    (folder / "step_2_validation_0_64x64.png").write_bytes(b"png")
    metrics = tmp_path / "m.jsonl"
    metrics.write_text(json.dumps({"step": 2, "metrics": {"loss/val/x": 0.5}}) + "\n")
    watched = [SampleFolder(folder, re.compile(r"^step_(?P<step>\d+)_")), MetricsFile(metrics, "loss/val/")]
    watcher = RunWatcher(watched, [], interval=0)
    assert watcher.poll() == []
    (folder / "step_4_validation_0_64x64.png").write_bytes(b"png")
    with metrics.open("a") as f:
        f.write(json.dumps({"step": 4, "metrics": {"loss/val/x": 0.4}}) + "\n")
    assert watcher.poll() == [Sample(str(folder / "step_4_validation_0_64x64.png"), 4, None), Validation(4, 0.4)]


def test_polls_at_most_once_per_interval_unless_forced(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    watcher = RunWatcher([SampleFolder(folder, re.compile(r"^step_(?P<step>\d+)_"))], [], interval=3600)
    assert watcher.poll() == []
    (folder / "step_1_x.png").write_bytes(b"png")
    assert watcher.poll() == []  # within the interval: not looked at
    assert [e.step for e in watcher.poll(force=True)] == [1]
