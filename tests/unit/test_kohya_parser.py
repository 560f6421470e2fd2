"""The sd-scripts log parser over every real log in ../shared/fixtures/logs/kohya and tests/fixtures, in any chunking:
one Progress per step with that step's own loss, phases only forward, failures that name the exception."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backends.kohya import KohyaLogParser
from orchestrator.events import PHASES, Checkpoint, Event, Failure, Phase, Progress, Validation

OWN_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# log -> (stdout log or None, (step, loss) per step, total, checkpoint steps, returncode, failure kind)
EXPECTED = {
    "run1.log": (None, [(1, 1.09), (2, 1.05), (3, 1.07), (4, 1.1)], 4, [], 0, None),
    "run1.stderr": ("run1.stdout", [(1, 1.09), (2, 1.05), (3, 1.07), (4, 1.1)], 4, [], 0, None),
    "run2.log": (None, [(1, 1.09), (2, 1.05), (3, 1.07), (4, 1.1)], 4, [2, 4], 0, None),
    # resumed at step 2: the bar restarts at 0, the steps do not
    "run4.log": (None, [(3, 1.13), (4, 1.15), (5, 1.09), (6, 1.06)], 6, [4, 6], 0, None),
    "run10.log": (None, [(1, 1.44), (2, 1.51)], 2, [], 0, None),
    "fail1.log": (None, [], None, [], 1, "model_not_found"),
    "run0_torchvision_missing.log": (None, [], None, [], 1, "not_installed"),
}
# sd-scripts' own runs in tests/fixtures (stderr.log and stdout.log per folder) -> whether the run failed
OWN_LOGS = {
    "kohya/validation": False,
    "kohya/mismatch": True,
    "kohya/sd3": False,
    "kohya/chroma": False,
    "kohya/lumina2": False,
    "kohya/lumina2/fail_diffusers_folder": True,
    "ddp/kohya-2cpu-fail": True,
}
# every log the parser is tested on: (folder, stderr or combined log, stdout log or None)
ALL_LOGS = [("shared", name, expected[0]) for name, expected in EXPECTED.items()] + [
    ("own", f"{folder}/stderr.log", f"{folder}/stdout.log") for folder in OWN_LOGS
]
FAILED = {"fail1.log", "run0_torchvision_missing.log"} | {
    f"{folder}/stderr.log" for folder, failed in OWN_LOGS.items() if failed
}


def replay(folder: Path, name: str, stdout: str | None, chunk: int, returncode: int | None) -> list[Event]:
    parser = KohyaLogParser()
    events: list[Event] = []
    streams = ([("stdout", folder / stdout)] if stdout else []) + [("stderr", folder / name)]
    for stream, path in streams:
        data = path.read_bytes()
        for i in range(0, len(data), chunk):
            events += parser.feed(data[i : i + chunk], stream)
    return events + parser.finish(returncode)


def _folder(fixtures_dir: Path, where: str) -> Path:
    return fixtures_dir / "logs" / "kohya" if where == "shared" else OWN_FIXTURES


def test_every_kohya_fixture_is_covered(fixtures_dir: Path) -> None:
    logs = {p.name for p in (fixtures_dir / "logs" / "kohya").iterdir() if p.suffix in (".log", ".stderr")}
    assert logs == set(EXPECTED)
    own = [*OWN_FIXTURES.glob("kohya/**/stderr.log"), *OWN_FIXTURES.glob("ddp/kohya-*/stderr.log")]
    assert {p.parent.relative_to(OWN_FIXTURES).as_posix() for p in own} == set(OWN_LOGS)


@pytest.mark.parametrize("chunk", [1, 13, 4096])
@pytest.mark.parametrize(("where", "name", "stdout"), ALL_LOGS)
def test_the_same_bytes_give_the_same_events_however_they_are_chunked(
    fixtures_dir: Path, where: str, name: str, stdout: str | None, chunk: int
) -> None:
    folder = _folder(fixtures_dir, where)
    whole = replay(folder, name, stdout, 1 << 30, None)
    assert replay(folder, name, stdout, chunk, None) == whole
    assert whole  # the log was read, not skipped


@pytest.mark.parametrize(("where", "name", "stdout"), ALL_LOGS)
def test_one_progress_per_step_with_a_loss_and_phases_in_order(
    fixtures_dir: Path, where: str, name: str, stdout: str | None
) -> None:
    events = replay(_folder(fixtures_dir, where), name, stdout, 65536, None)
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == sorted(set(steps))  # each step once, never backwards
    assert all(e.loss is not None for e in events if isinstance(e, Progress))
    phases = [PHASES.index(e.name) for e in events if isinstance(e, Phase)]
    assert phases == sorted(set(phases)) and "done" not in [e.name for e in events if isinstance(e, Phase)]


@pytest.mark.parametrize(("where", "name", "stdout"), ALL_LOGS)
def test_a_log_replayed_without_its_exit_status_fails_exactly_when_it_ends_in_a_traceback(
    fixtures_dir: Path, where: str, name: str, stdout: str | None
) -> None:
    events = replay(_folder(fixtures_dir, where), name, stdout, 65536, None)
    failures = [e for e in events if isinstance(e, Failure)]
    assert len(failures) == (1 if name in FAILED else 0)
    for failure in failures:  # the trainer's own exception, named, never accelerate's wrapper
        assert "Error: " in failure.message and "CalledProcessError" not in failure.message


@pytest.mark.parametrize("chunk", [1, 13, 65536])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_steps_losses_totals_checkpoints_and_failures(fixtures_dir: Path, name: str, chunk: int) -> None:
    stdout, steps, total, checkpoints, returncode, failure = EXPECTED[name]
    events = replay(fixtures_dir / "logs" / "kohya", name, stdout, chunk, returncode)
    progress = [e for e in events if isinstance(e, Progress)]
    assert [(e.step, e.loss) for e in progress] == steps  # the step's own loss, not the previous step's average
    assert all(e.total == total for e in progress)
    assert [c.step for c in events if isinstance(c, Checkpoint)] == checkpoints
    failures = [e for e in events if isinstance(e, Failure)]
    if failure is None:
        assert not failures
    else:
        (only,) = failures
        assert only.kind == failure
        assert only.message.startswith("sd-scripts failed: ") and "CalledProcessError" not in only.message
        assert only.hint and only.log_tail


def test_a_state_dict_size_mismatch_names_the_exception_after_hundreds_of_lines() -> None:
    """A real run (tests/fixtures/kohya/mismatch): an SDXL model trained as SD 1.5. The report of the mismatched
    tensors runs to hundreds of lines and accelerate's CalledProcessError follows; the message is the cause."""
    folder = OWN_FIXTURES / "kohya" / "mismatch"
    assert (folder / "stderr.log").read_text(encoding="utf-8").count("size mismatch for") > 100
    for returncode in (1, None):
        events = replay(folder, "stderr.log", "stdout.log", 65536, returncode)
        (failure,) = [e for e in events if isinstance(e, Failure)]
        assert failure.kind == "model_mismatch"
        assert failure.message.startswith(
            "sd-scripts failed: RuntimeError: Error(s) in loading state_dict for UNet2DConditionModel"
        )
        assert "family" in (failure.hint or "")


def test_a_traceback_that_training_went_on_after_is_no_failure_on_replay() -> None:
    parser = KohyaLogParser()
    text = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nImportError: no xformers\n'
        "steps:  50%|#####     | 1/2 [00:01<00:01,  1.00s/it]\r"
        "steps:  50%|#####     | 1/2 [00:01<00:01,  1.00s/it, avr_loss=0.5]\r"
    )
    assert not [e for e in parser.feed(text.encode(), "stderr") + parser.finish(None) if isinstance(e, Failure)]


@pytest.mark.parametrize("chunk", [1, 13, 65536])
def test_validation_bars_become_validation_events_not_progress(chunk: int) -> None:
    """A real run with a validation split: the "validation steps" bars (0/4 .. 4/4) must not read as training steps
    going backwards, and each pass gives one Validation event with the pass's final mean loss."""
    events = replay(OWN_FIXTURES / "kohya" / "validation", "stderr.log", "stdout.log", chunk, 0)
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == [1, 2, 3, 4]
    validations = [(e.step, e.loss) for e in events if isinstance(e, Validation)]
    # every 2 steps, plus the epoch-end pass at step 3 (6 training images / batch 2); the every-N pass at step 4
    # and the epoch-end pass that follows it measure the same step: one event
    assert validations == [(2, 1.04), (3, 1.04), (4, 1.04)]
    assert [e.step for e in events if isinstance(e, Checkpoint)] == [2, 4]


def test_a_validation_pass_reports_its_last_draw_not_the_stale_first_one() -> None:
    parser = KohyaLogParser()
    bars = [
        "steps:  50%|#####     | 2/4 [00:02<00:02,  1.00s/it, avr_loss=1.1]",
        "steps:  50%|#####     | 2/4 [00:02<00:02,  1.00s/it, avr_loss=1.2]",
        "validation steps: 100%|##########| 2/2 [00:01<00:00,  1.50it/s, val_avg_loss=0.9, timestep=200]",
        "validation steps: 100%|##########| 2/2 [00:01<00:00,  1.50it/s, val_avg_loss=0.8, timestep=400]",
        "validation steps: 100%|##########| 2/2 [00:01<00:00,  1.40it/s, val_avg_loss=0.8, timestep=400]",
        "steps:  75%|#######   | 3/4 [00:03<00:01,  1.00s/it, avr_loss=1.2]",
        "steps:  75%|#######   | 3/4 [00:03<00:01,  1.00s/it, avr_loss=1.3]",
    ]
    events = parser.feed("\r".join(bars).encode() + b"\r", "stderr")
    assert [e for e in events if isinstance(e, Validation)] == [Validation(step=2, loss=0.8)]
    assert [(e.step, e.loss) for e in events if isinstance(e, Progress)] == [(2, 1.2), (3, 1.3)]


def test_a_step_drawn_once_is_reported_at_the_next_step_or_the_end() -> None:
    """On a fast GPU tqdm skips a step's first draw (mininterval); set_postfix's draw, with the step's loss, stays."""
    parser = KohyaLogParser()
    events = parser.feed(
        b"steps:  25%|##        | 1/4 [00:01<00:03,  9.00it/s, avr_loss=0.9]\r"
        b"steps:  50%|#####     | 2/4 [00:01<00:02,  9.00it/s, avr_loss=0.8]\r",
        "stderr",
    )
    assert [(e.step, e.loss) for e in events if isinstance(e, Progress)] == [(1, 0.9)]
    events = parser.finish(0)
    assert [(e.step, e.loss, e.it_per_s) for e in events if isinstance(e, Progress)] == [(2, 0.8, 9.0)]


def test_a_late_last_draw_after_the_final_save_keeps_the_loss_but_not_training_again() -> None:
    """Seen on a real SDXL run: stdout's final "saving checkpoint" arrived before stderr's last draw with avr_loss."""
    parser = KohyaLogParser()
    events = parser.feed(b"steps: 100%|##########| 2/2 [00:06<00:00,  3.32s/it, avr_loss=1.21]\r", "stderr")
    events += parser.feed(b"saving checkpoint: /runs/x/output/kohya/cmp.safetensors\n", "stdout")
    events += parser.feed(b"steps: 100%|##########| 2/2 [00:06<00:00,  3.32s/it, avr_loss=1.13]\r", "stderr")
    events += parser.finish(0)
    assert [e.name for e in events if isinstance(e, Phase)] == ["training", "saving"]
    assert [(e.step, e.loss) for e in events if isinstance(e, Progress)] == [(2, 1.13)]


def test_an_epoch_checkpoint_is_a_checkpoint_not_the_final_save() -> None:
    parser = KohyaLogParser()
    events = parser.feed(
        b"steps:  50%|#####     | 2/4 [00:02<00:02,  1.00s/it, avr_loss=1.1]\r"
        b"steps:  50%|#####     | 2/4 [00:02<00:02,  1.00s/it, avr_loss=1.2]\r",
        "stderr",
    )
    events += parser.feed(b"\nsaving checkpoint: /runs/x/output/kohya/me-000001.safetensors\n", "stdout")
    assert [e for e in events if isinstance(e, Checkpoint)] == [
        Checkpoint("/runs/x/output/kohya/me-000001.safetensors", 2)
    ]
    assert "saving" not in [e.name for e in events if isinstance(e, Phase)]


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


# --- what sd-scripts' SD3, Chroma and Lumina 2 runs add (tests/fixtures/kohya/{sd3,chroma,lumina2}) ---------------


def in_run_order(folder: Path, *, drop: bytes | None = None) -> tuple[bytes, bytes, bytes]:
    """A run's streams as they arrive: stderr up to the training bar (loading, caching), stdout (the summary block
    first, then the saves), then the rest of stderr. ``drop``: leave out the stderr lines holding it."""
    err = (folder / "stderr.log").read_bytes()
    if drop is not None:
        err = b"".join(line for line in err.splitlines(keepends=True) if drop not in line)
    cut = err.index(b"steps:")
    return err[:cut], (folder / "stdout.log").read_bytes(), err[cut:]


def feed_in_order(parts: tuple[bytes, bytes, bytes], returncode: int | None) -> tuple[KohyaLogParser, list[Event]]:
    parser = KohyaLogParser()
    events = parser.feed(parts[0], "stderr") + parser.feed(parts[1], "stdout") + parser.feed(parts[2], "stderr")
    return parser, events + parser.finish(returncode)


@pytest.mark.parametrize(
    ("family", "steps"),
    [
        ("sd3", [(1, 2.93), (2, 1.71), (3, 1.28), (4, 1.92)]),
        ("chroma", [(1, 1.5), (2, 1.52)]),
        ("lumina2", [(1, 6.59), (2, 6.35), (3, 6.26)]),
    ],
)
def test_new_family_runs_read_in_arrival_order(family: str, steps: list[tuple[int, float]]) -> None:
    """Loading, then caching (latents and text-encoder outputs: unlabeled bars, minutes on CPU, never progress),
    then one Progress per step with its own loss, though a FutureWarning is glued onto the bar at each save."""
    parser, events = feed_in_order(in_run_order(OWN_FIXTURES / "kohya" / family), 0)
    assert [e.name for e in events if isinstance(e, Phase)] == ["loading", "caching", "training", "saving"]
    assert [(e.step, e.loss) for e in events if isinstance(e, Progress)] == steps
    assert not [e for e in events if isinstance(e, Failure)]
    assert not [line for line in parser.watch.tail if "%|" in line]  # no bar in a failure's tail


def test_caching_text_encoder_outputs_alone_is_the_caching_phase() -> None:
    parts = in_run_order(OWN_FIXTURES / "kohya" / "sd3", drop=b"caching latents")
    events = feed_in_order(parts, 0)[1]
    assert [e.name for e in events if isinstance(e, Phase)] == ["loading", "caching", "training", "saving"]


def test_text_glued_onto_a_bar_is_a_line_of_its_own() -> None:
    """The FutureWarning sd-scripts' LoRA modules print at each save lands on the bar with no line break: it is a
    line of the log (kept for a failure's tail); a traceback glued the same way still ends the run."""
    parser, _ = feed_in_order(in_run_order(OWN_FIXTURES / "kohya" / "sd3"), None)
    assert any(
        line.startswith("/data/sd-scripts/networks/lora_sd3.py:530: FutureWarning") for line in parser.watch.tail
    )
    parser = KohyaLogParser()
    bar = "steps:  25%|██▌       | 1/4 [00:01<00:04,  1.44s/it, avr_loss=2.93]"
    crash = 'Traceback (most recent call last):\n  File "sd3_train_network.py", line 9\nRuntimeError: boom\n'
    events = parser.feed((bar + "\r" + bar + crash).encode(), "stderr") + parser.finish(None)
    (failure,) = [e for e in events if isinstance(e, Failure)]
    assert failure.message == "sd-scripts failed: RuntimeError: boom"
    assert [(e.step, e.loss) for e in events if isinstance(e, Progress)] == [(1, 2.93)]


def test_a_chunk_of_nothing_but_draws_reads_as_the_same_draws_one_by_one() -> None:
    """A chunk whose segments are all draws takes the bulk path (one findall on the bytes); each draw keeps what the
    log said before it (resume offset, epoch), and a step drawn once at a chunk's end is reported at the next."""
    head = b"skipping 2 steps\nepoch 2/3\n"
    draws = b"".join(
        f"steps:  {n * 25}%|##        | {n}/4 [00:0{n}<00:03,  1.50s/it, avr_loss={loss}]\r".encode()
        for n, loss in [(0, ""), (1, 0.9), (1, 0.8), (2, 0.7), (3, 0.6), (3, 0.5), (4, 0.4)]
    ).replace(b", avr_loss=]", b"]")

    def events(chunks: list[bytes]) -> list[Event]:
        parser = KohyaLogParser()
        found = parser.feed(head, "stdout")
        for chunk in chunks:
            found += parser.feed(chunk, "stderr")
        return found + parser.finish(0)

    whole = events([draws])
    assert whole == events([bytes([b]) for b in draws])
    assert [(e.step, e.epoch, e.epochs, e.loss, e.total) for e in whole if isinstance(e, Progress)] == [
        (3, 2, 3, 0.8, 6),
        (4, 2, 3, 0.7, 6),
        (5, 2, 3, 0.5, 6),
        (6, 2, 3, 0.4, 6),
    ]
