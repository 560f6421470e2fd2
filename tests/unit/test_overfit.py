"""Overfitting flag: the checkpoint where validation loss turns up while training loss still falls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.events import Checkpoint, EventLog, Progress, Validation
from orchestrator.overfit import find_turn


def _row(step: int, train: float | None, val: float | None) -> dict[str, object]:
    return {"step": step, "path": f"ckpt-{step}.safetensors", "train_loss": train, "val_loss": val}


def test_the_turn_is_where_validation_rises_while_training_falls() -> None:
    rows = [_row(100, 0.30, 0.32), _row(200, 0.25, 0.28), _row(300, 0.20, 0.31), _row(400, 0.15, 0.35)]
    assert find_turn(rows) == 300


def test_no_turn_when_both_losses_rise_together_or_validation_keeps_falling() -> None:
    assert find_turn([_row(100, 0.30, 0.32), _row(200, 0.25, 0.28), _row(300, 0.22, 0.27)]) is None
    # Both rising is a bad step (e.g. a learning-rate spike), not overfitting.
    assert find_turn([_row(100, 0.20, 0.25), _row(200, 0.26, 0.30)]) is None


def test_checkpoints_without_validation_loss_are_skipped_not_taken_for_a_turn() -> None:
    assert find_turn([]) is None
    assert find_turn([_row(100, 0.3, None), _row(200, 0.2, None)]) is None
    # The unmeasured checkpoint in the middle is ignored; the turn is measured across the two measured ones.
    assert find_turn([_row(100, 0.30, 0.25), _row(200, 0.25, None), _row(300, 0.20, 0.29)]) == 300


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "me-20261128-120000"
    (run / "job.yaml").parent.mkdir(parents=True)
    (run / "job.yaml").write_text("name: me\n", encoding="utf-8")
    log = EventLog(run / "events.jsonl")
    for step, train, val in [(10, 0.40, 0.42), (20, 0.30, 0.33), (30, 0.20, 0.38)]:
        log.write(Progress(step=step, total=30, loss=train))
        log.write(Checkpoint(path=f"out/me-{step:06d}.safetensors", step=step))
        log.write(Validation(step=step, loss=val))
    log.close()
    return run


def test_runs_show_lists_both_losses_per_checkpoint_and_flags_the_turn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run_folder(tmp_path)
    assert main(["runs", "show", str(run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["checkpoints"]
    assert [(r["step"], r["train_loss"], r["val_loss"]) for r in rows] == [
        (10, 0.40, 0.42),
        (20, 0.30, 0.33),
        (30, 0.20, 0.38),
    ]
    assert main(["runs", "show", str(run)]) == 0
    text = capsys.readouterr().err  # tables go to stderr, like all human output
    # Rich may wrap the flag onto a second line of the row; only the step-30 row carries it.
    flagged = [line for line in text.splitlines() if "<- validation loss" in line]
    assert len(flagged) == 1 and "0.3800" in flagged[0] and "0.2000" in flagged[0], text
    assert "turns up here" in text, text


def test_a_training_run_warns_once_where_the_turn_shows() -> None:
    from orchestrator.events import Log
    from orchestrator.overfit import OverfitWatch

    watch = OverfitWatch()
    stream = [
        Progress(step=1, loss=0.5), Progress(step=2, loss=0.4), Validation(step=2, loss=0.45),
        Progress(step=3, loss=0.3), Progress(step=4, loss=0.3), Validation(step=4, loss=0.40),
        Progress(step=5, loss=0.2), Progress(step=6, loss=0.1), Validation(step=6, loss=0.43),  # the turn
        Progress(step=7, loss=0.05), Validation(step=8, loss=0.50),  # still rising: no second warning
    ]  # fmt: skip
    warnings = [w for w in map(watch.see, stream) if w is not None]
    assert len(warnings) == 1 and isinstance(warnings[0], Log) and warnings[0].level == "warning"
    assert "rose at step 6 (0.4000 -> 0.4300)" in warnings[0].text and "step 4" in warnings[0].text
