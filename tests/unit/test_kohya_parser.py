"""The sd-scripts log parser over every real log in ../shared/fixtures/logs/kohya, in any chunking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backends.kohya import KohyaLogParser
from orchestrator.events import Checkpoint, Failure, Phase, Progress, Validation

# log file (stdout file or None) -> (final step, total, final avr_loss, checkpoint steps, returncode, failure kind)
EXPECTED = {
    "run1.log": (None, 4, 4, 1.1, [], 0, None),
    "run1.stderr": ("run1.stdout", 4, 4, 1.1, [], 0, None),
    "run2.log": (None, 4, 4, 1.1, [2, 4], 0, None),
    "run4.log": (None, 6, 6, 1.06, [4, 6], 0, None),  # resumed at 2: the bar restarts, the steps do not
    "run10.log": (None, 2, 2, 1.51, [], 0, None),
    "fail1.log": (None, None, None, None, [], 1, "model_not_found"),
    "run0_torchvision_missing.log": (None, None, None, None, [], 1, "not_installed"),
}


def replay(folder: Path, name: str, stdout: str | None, chunk: int, returncode: int) -> list:
    parser = KohyaLogParser()
    events = []
    streams = ([("stdout", folder / stdout)] if stdout else []) + [("stderr", folder / name)]
    for stream, path in streams:
        data = path.read_bytes()
        for i in range(0, len(data), chunk):
            events += parser.feed(data[i : i + chunk], stream)
    return events + parser.finish(returncode)


def test_every_kohya_fixture_is_covered(fixtures_dir: Path) -> None:
    logs = {p.name for p in (fixtures_dir / "logs" / "kohya").iterdir() if p.suffix in (".log", ".stderr")}
    assert logs == set(EXPECTED)


@pytest.mark.parametrize("chunk", [1, 13, 65536])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_final_step_total_loss_and_checkpoints(fixtures_dir: Path, name: str, chunk: int) -> None:
    stdout, step, total, loss, checkpoints, returncode, failure = EXPECTED[name]
    events = replay(fixtures_dir / "logs" / "kohya", name, stdout, chunk, returncode)
    progress = [e for e in events if isinstance(e, Progress)]
    if step is None:
        assert not progress
    else:
        last = progress[-1]
        assert (last.step, last.total, last.loss) == (step, total, loss)
        assert [p.step for p in progress] == sorted(p.step for p in progress)  # never goes back
    assert [c.step for c in events if isinstance(c, Checkpoint)] == checkpoints
    failures = [e for e in events if isinstance(e, Failure)]
    if failure is None:
        assert not failures
    else:
        (only,) = failures
        assert only.kind == failure
        assert "CalledProcessError" not in only.message  # the trainer's error, not accelerate's wrapper
        assert only.hint and only.log_tail


def test_first_draw_of_a_step_does_not_carry_the_previous_loss(fixtures_dir: Path) -> None:
    events = replay(fixtures_dir / "logs" / "kohya", "run1.log", None, 65536, 0)
    by_step: dict[int, list] = {}
    for e in events:
        if isinstance(e, Progress):
            by_step.setdefault(e.step, []).append(e.loss)
    assert by_step[2][0] is None and by_step[2][-1] == 1.05


def test_parse_log_cli_prints_json_lines(fixtures_dir: Path) -> None:
    log = fixtures_dir / "logs" / "kohya" / "fail1.log"
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "parse-log", "--backend", "kohya", str(log), "--returncode", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert '"event": "failure"' in lines[-1] and '"model_not_found"' in lines[-1]


OWN_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kohya"


@pytest.mark.parametrize("chunk", [1, 13, 65536])
def test_validation_bars_become_validation_events_not_progress(chunk: int) -> None:
    """A real run with a validation split: the "validation steps" bars (0/4 .. 4/4) must not read as training steps
    going backwards, and each pass gives one Validation event with the pass's final mean loss."""
    events = replay(OWN_FIXTURES / "validation", "stderr.log", "stdout.log", chunk, 0)
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == sorted(steps) and steps[-1] == 4
    validations = [(e.step, e.loss) for e in events if isinstance(e, Validation)]
    # every 2 steps, plus the epoch-end pass at step 3 (6 training images / batch 2); the every-N pass at step 4
    # and the epoch-end pass that follows it measure the same step: one event
    assert validations == [(2, 1.04), (3, 1.04), (4, 1.04)]
    assert [e.step for e in events if isinstance(e, Checkpoint)] == [2, 4]


def test_a_validation_pass_reports_its_last_draw_not_the_stale_first_one() -> None:
    parser = KohyaLogParser()
    bars = [
        "steps:  50%|#####     | 2/4 [00:02<00:02,  1.00s/it, avr_loss=1.2]",
        "validation steps: 100%|##########| 2/2 [00:01<00:00,  1.50it/s, val_avg_loss=0.9, timestep=200]",
        "validation steps: 100%|##########| 2/2 [00:01<00:00,  1.50it/s, val_avg_loss=0.8, timestep=400]",
        "validation steps: 100%|##########| 2/2 [00:01<00:00,  1.40it/s, val_avg_loss=0.8, timestep=400]",
        "steps:  75%|#######   | 3/4 [00:03<00:01,  1.00s/it, avr_loss=1.2]",
    ]
    events = parser.feed("\r".join(bars).encode() + b"\r", "stderr")
    assert [e for e in events if isinstance(e, Validation)] == [Validation(step=2, loss=0.8)]
    assert [e.step for e in events if isinstance(e, Progress)] == [2, 3]


def test_a_late_last_draw_after_the_final_save_keeps_the_loss_but_not_training_again() -> None:
    """Seen on a real SDXL run: stdout's final "saving checkpoint" arrived before stderr's last draw with avr_loss."""
    parser = KohyaLogParser()
    events = parser.feed(b"steps: 100%|##########| 2/2 [00:06<00:00,  3.32s/it, avr_loss=1.21]\r", "stderr")
    events += parser.feed(b"saving checkpoint: /runs/x/output/kohya/cmp.safetensors\n", "stdout")
    events += parser.feed(b"steps: 100%|##########| 2/2 [00:06<00:00,  3.32s/it, avr_loss=1.13]\r", "stderr")
    events += parser.finish(0)
    assert [e.name for e in events if isinstance(e, Phase)] == ["training", "saving"]
    assert [(e.step, e.loss) for e in events if isinstance(e, Progress)][-1] == (2, 1.13)
