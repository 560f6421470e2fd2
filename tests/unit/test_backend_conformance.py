"""The same checks over every registered backend (`backends.base.names()`): what the Backend protocol promises.

- Parsers: every fixture log of the backend gives the same events however its bytes are split (at every byte for
  the short ones); one Progress per step, steps increasing, each with a loss; phases only forward and never "done"
  (the run's own); a failed log gives exactly one Failure whose message names the exception, also replayed without
  its exit status; a successful log none.
- ``command`` returns the same Launch for the same arguments, touches no file and reads nothing from os.environ.
- ``render`` writes files that read back to the job's values, and a run copy holding exactly the dataset's images
  with their captions as trained.
- ``check`` changes nothing.

A third backend gets all of this by being registered and having its logs in FIXTURES.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, SHARED

from backends import base
from backends.base import Backend, LogParser
from orchestrator.dataset.model import load_dataset
from orchestrator.envs import BackendEnv, resolve_runtime
from orchestrator.events import FAILURE_KINDS, PHASES, Failure, Phase, Progress
from orchestrator.job import build_job
from orchestrator.runs import create_run

LOGS = SHARED / "fixtures" / "logs"
LOCAL = REPO / "tests" / "fixtures"


def local_runs(backend: str, runs: dict[str, int]) -> list[tuple[str, Path | None, Path, int]]:
    """Real runs captured under tests/fixtures/<backend>/<name>/ as stdout.log and stderr.log, with their exit."""
    return [
        (name, LOCAL / backend / name / "stdout.log", LOCAL / backend / name / "stderr.log", rc)
        for name, rc in runs.items()
    ]


# backend -> [(label, stdout file or None, stderr or combined file, the exit status the run had)]
FIXTURES: dict[str, list[tuple[str, Path | None, Path, int]]] = {
    "kohya": [
        ("run1.log", None, LOGS / "kohya" / "run1.log", 0),
        ("run1 split", LOGS / "kohya" / "run1.stdout", LOGS / "kohya" / "run1.stderr", 0),
        ("run2.log", None, LOGS / "kohya" / "run2.log", 0),
        ("run4.log (resumed)", None, LOGS / "kohya" / "run4.log", 0),
        ("run10.log (flux)", None, LOGS / "kohya" / "run10.log", 0),
        ("fail1.log", None, LOGS / "kohya" / "fail1.log", 1),
        ("run0_torchvision_missing.log", None, LOGS / "kohya" / "run0_torchvision_missing.log", 1),
        ("validation", LOCAL / "kohya" / "validation" / "stdout.log", LOCAL / "kohya" / "validation" / "stderr.log", 0),
        (
            "ddp fail",
            LOCAL / "ddp" / "kohya-2cpu-fail" / "stdout.log",
            LOCAL / "ddp" / "kohya-2cpu-fail" / "stderr.log",
            1,
        ),
        *local_runs("kohya", {"mismatch": 1, "sd3": 0, "chroma": 0, "lumina2": 0, "lumina2/fail_diffusers_folder": 1}),
        ("sd3 fail", LOCAL / "kohya" / "sd3" / "fail.stdout.log", LOCAL / "kohya" / "sd3" / "fail.stderr.log", 1),
    ],
    "simpletuner": [
        ("run1.log", None, LOGS / "simpletuner" / "run1.log", 0),
        ("run1 split", LOGS / "simpletuner" / "run1.stdout", LOGS / "simpletuner" / "run1.stderr", 0),
        ("run2.log", None, LOGS / "simpletuner" / "run2.log", 0),
        ("run4.log", None, LOGS / "simpletuner" / "run4.log", 0),
        ("fail1.log", None, LOGS / "simpletuner" / "fail1.log", 1),
        (
            "ddp",
            LOCAL / "ddp" / "simpletuner-2cpu" / "stdout.log",
            LOCAL / "ddp" / "simpletuner-2cpu" / "stderr.log",
            0,
        ),
        *local_runs(
            "simpletuner",
            {
                "sd3": 0,
                "chroma": 0,
                "lumina2": 0,
                "lumina2/full_geometry": 0,
                "lumina2/fail_wrong_model": 1,
                "qwen_image": 0,
                "flux2": 0,
            },
        ),
        (
            "sd3 fail",
            LOCAL / "simpletuner" / "sd3" / "fail.stdout.log",
            LOCAL / "simpletuner" / "sd3" / "fail.stderr.log",
            1,
        ),
    ],
}
SHORT = 20_000  # logs up to this size are split at every byte; longer ones at many seeded random places
EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception|Interrupt)\b|\bKilled\b")


def test_every_registered_backend_has_fixtures() -> None:
    assert sorted(FIXTURES) == base.names()


def cases() -> list[tuple[str, str, Path | None, Path, int]]:
    return [(name, label, out, err, rc) for name in base.names() for label, out, err, rc in FIXTURES.get(name, [])]


def replay(backend: str, stdout: Path | None, stderr: Path, cuts: list[int] | None, returncode: int | None) -> list:
    """Events of one run's logs: stdout's bytes, then stderr's, each split where ``cuts`` says (None: not at all)."""
    parser = base.get(backend).parser()
    assert isinstance(parser, LogParser)
    events = []
    for stream, path in ([("stdout", stdout)] if stdout else []) + [("stderr", stderr)]:
        data = path.read_bytes()
        edges = [0, *sorted({c for c in (cuts or []) if 0 < c < len(data)}), len(data)]
        for start, end in zip(edges, edges[1:], strict=False):
            events += parser.feed(data[start:end], stream)
    return events + parser.finish(returncode)


def every_byte(size: int) -> list[int]:
    return list(range(1, size)) if size <= SHORT else sorted(random.Random(size).sample(range(1, size), 3000))


@pytest.fixture
def needs_fixtures() -> None:
    if not LOGS.is_dir():
        pytest.skip(f"shared fixture logs not found at {LOGS} (set LORAFORGE_SHARED)")


@pytest.mark.parametrize(("backend", "label", "stdout", "stderr", "returncode"), cases(), ids=lambda v: str(v))
def test_events_do_not_depend_on_chunking(
    needs_fixtures: None, backend: str, label: str, stdout: Path | None, stderr: Path, returncode: int
) -> None:
    whole = replay(backend, stdout, stderr, None, returncode)
    size = max(stderr.stat().st_size, stdout.stat().st_size if stdout else 0)
    assert replay(backend, stdout, stderr, every_byte(size), returncode) == whole
    for chunk in (7, 4096):
        assert replay(backend, stdout, stderr, list(range(chunk, size, chunk)), returncode) == whole


@pytest.mark.parametrize(("backend", "label", "stdout", "stderr", "returncode"), cases(), ids=lambda v: str(v))
def test_one_progress_per_step_with_its_loss_and_phases_in_order(
    needs_fixtures: None, backend: str, label: str, stdout: Path | None, stderr: Path, returncode: int
) -> None:
    events = replay(backend, stdout, stderr, None, returncode)
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == sorted(set(steps)), f"steps repeat or go back: {steps}"
    if returncode == 0:
        assert steps, "a successful run's log shows its steps"
        assert all(e.loss is not None for e in events if isinstance(e, Progress))
    phases = [e.name for e in events if isinstance(e, Phase)]
    assert "done" not in phases  # the run's own, after its LoRA is saved
    assert [PHASES.index(p) for p in phases] == sorted({PHASES.index(p) for p in phases}), phases


@pytest.mark.parametrize(("backend", "label", "stdout", "stderr", "returncode"), cases(), ids=lambda v: str(v))
def test_a_failed_log_names_its_exception_also_without_the_exit_status(
    needs_fixtures: None, backend: str, label: str, stdout: Path | None, stderr: Path, returncode: int
) -> None:
    for known in (returncode, None):
        failures = [e for e in replay(backend, stdout, stderr, None, known) if isinstance(e, Failure)]
        if returncode == 0:
            assert failures == []
            continue
        (failure,) = failures
        assert failure.kind in FAILURE_KINDS
        assert EXCEPTION_NAME.search(failure.message), failure.message
        assert failure.hint and failure.log_tail


# --- render, command, check --------------------------------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    from orchestrator.tiny.dataset import make_dataset

    folder = make_dataset(tmp_path / "photos", count=4, size=64)
    (folder / "nested").mkdir()
    (folder / next(folder.glob("*.png")).name).rename(folder / "nested" / "UPPER.PNG")
    for image in [*folder.glob("*.png"), folder / "nested" / "UPPER.PNG"]:
        image.with_suffix(".txt").write_text(f"ohwx, a photo named {image.stem}")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "copy.png").write_bytes((folder / "nested" / "UPPER.PNG").read_bytes())  # never trained
    return folder


def a_job(tmp_path: Path, dataset: Path, backend: str):  # type: ignore[no-untyped-def]
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)  # a diffusers folder: nothing is loaded by render
    family = sorted(base.get(backend).families)[-1]  # sdxl for both today
    return build_job(
        {
            "name": "conform",
            "base_model": str(model),
            "family": family,
            "trigger": "ohwx",
            "dataset": str(dataset),
            "network": {"rank": 24, "alpha": 12.5},  # values nothing else in the files is likely to equal
            "training": {"steps": 37, "learning_rate": 3.3e-4, "batch_size": 1, "resolution": 512, "seed": 4242},
            "saving": {"every_n_steps": 4},
            "output": {"dir": str(tmp_path / "runs")},
        }
    )


def cpu_env(backend: str) -> BackendEnv:
    return resolve_runtime(BackendEnv(backend, Path(sys.executable), versions={"cuda": "no"}), environ={})


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("backend", base.names())
def test_render_reads_back_to_the_job_and_copies_exactly_the_dataset(
    tmp_path: Path, dataset: Path, backend: str
) -> None:
    impl = base.get(backend)
    assert isinstance(impl, Backend)
    assert impl.label and impl.families and isinstance(impl.webhooks, bool)
    assert not set(impl.refused) & set(impl.families)
    job = a_job(tmp_path, dataset, backend)
    data = load_dataset(dataset)
    run = create_run(job, backend)
    rendered = impl.render(job, data, run, cpu_env(backend))
    parsed: dict[str, object] = {}
    for path in rendered.files.values():
        if path.suffix == ".json":
            parsed[path.name] = json.loads(path.read_text())
        elif path.suffix == ".toml":
            parsed[path.name] = tomllib.loads(path.read_text())
    text = json.dumps(parsed)
    for value in (
        job.network.rank,
        job.network.alpha,
        job.training.steps,
        job.training.learning_rate,
        job.training.seed,
    ):
        assert re.search(rf"(?<![\d.]){re.escape(json.dumps(value))}(?![\d.])", text), (value, text[:2000])
    copied = sorted(p for p in rendered.data.iterdir() if p.suffix in (".png", ".jpg"))
    assert len(copied) == data.count == 4  # the hidden folder's copy stays out; the nested upper-case one is in
    captions = sorted(p.with_suffix(".txt").read_text() for p in copied)
    assert captions == sorted(i.caption for i in data.images)


@pytest.mark.parametrize("backend", base.names())
def test_command_is_a_pure_function(
    tmp_path: Path, dataset: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    impl = base.get(backend)
    job = a_job(tmp_path, dataset, backend)
    rendered = impl.render(job, load_dataset(dataset), create_run(job, backend), cpu_env(backend))
    before = snapshot(tmp_path)
    monkeypatch.setenv("LORAFORGE_CONFORMANCE_SENTINEL", "must-not-leak")
    first = impl.command(job, rendered, cpu_env(backend))
    second = impl.command(job, rendered, cpu_env(backend))
    assert first == second
    assert snapshot(tmp_path) == before
    assert "LORAFORGE_CONFORMANCE_SENTINEL" not in first.env
    assert not set(first.env) >= {"PATH", "HOME"}  # only its own settings, not a copy of ours
    assert os.environ["LORAFORGE_CONFORMANCE_SENTINEL"] == "must-not-leak"
    warm = impl.warm(cpu_env(backend))  # a warm start must run exactly the command a cold start would
    assert warm is None or first.argv[:3] == [sys.executable, "-m", warm.module]


@pytest.mark.parametrize("backend", base.names())
def test_check_changes_nothing(tmp_path: Path, backend: str) -> None:
    home = Path(os.environ["LORAFORGE_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    before = snapshot(home)
    problems = base.get(backend).check(BackendEnv(backend, tmp_path / "no-such-python"))
    assert problems and problems[0].fix  # a broken environment is named, with the command that fixes it
    assert snapshot(home) == before
