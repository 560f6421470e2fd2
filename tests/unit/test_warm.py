"""Warm starts (orchestrator/warm.py): a trainer's interpreter imports its slow part early, then runs the run's
`python -m MODULE ARGS` exactly as a fresh interpreter would, adopted by the launcher like any child."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.base import Launch, Warm
from orchestrator.envs import BackendEnv
from orchestrator.launch import run_process
from orchestrator.warm import start_warm

REPO = Path(__file__).resolve().parents[2]

TRAINER = """
import gc, os, sys, time, pathlib
import slowtrainer.heavy as heavy
print("later imported", "slowtrainer.first_step" in sys.modules, "collector on", gc.isenabled())
print("argv", sys.argv[1:])
print("cwd", os.getcwd())
print("run setting", os.environ.get("RUN_SETTING"), "import setting", heavy.SEEN_AT_IMPORT)
print("since import", round(time.time() - heavy.IMPORTED_AT, 2))
print("path0 is cwd", sys.path[0] == os.getcwd())
sys.exit(3)
"""
HEAVY = """
import os, time, pathlib
time.sleep(2)  # the slow part of a trainer's start
IMPORTED_AT = time.time()
SEEN_AT_IMPORT = os.environ.get("IMPORT_SETTING")
with open(os.environ["IMPORT_LOG"], "a") as log:
    log.write("imported\\n")
pathlib.Path("debug.log").write_text("written where it is imported, as SimpleTuner does")
"""


# what a backend's warm() gives: the thing under test is the warm start, not a trainer; of the modules the run
# imports later, one is not in this version
WARM = Warm("slowtrainer.train", ("slowtrainer.heavy",), {"IMPORT_SETTING": "at-start"},
            later=("slowtrainer.first_step", "slowtrainer.not_in_this_version"))  # fmt: skip


@pytest.fixture
def trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "lib" / "slowtrainer"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "heavy.py").write_text(HEAVY)
    (package / "train.py").write_text(TRAINER)
    (package / "first_step.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "lib"))
    monkeypatch.setenv("IMPORT_LOG", str(tmp_path / "imports.log"))
    (tmp_path / "user").mkdir()
    monkeypatch.chdir(tmp_path / "user")  # the folder the user runs loraforge in
    return tmp_path


def test_the_run_starts_in_the_warm_interpreter_as_in_a_fresh_one(trainer: Path) -> None:
    env = BackendEnv("fake", Path(sys.executable))
    warm = start_warm(WARM, env)
    assert warm is not None
    time.sleep(3)  # loraforge prepares photos meanwhile
    work = trainer / "work"
    work.mkdir()
    launch = Launch([sys.executable, "-m", "slowtrainer.train", "--config", "c.json"], {}, work)
    child_env = {**os.environ, "RUN_SETTING": "at-release"}
    started = time.monotonic()
    process = warm.release(launch, child_env)
    assert process is not None
    out: list[bytes] = []
    result = run_process(launch.argv, env=child_env, cwd=work, log_dir=trainer / "logs",
                         on_output=lambda s, d: out.append(d), process=process)  # fmt: skip
    text = b"".join(out).decode()
    assert result.returncode == 3  # its exit status is the run's
    assert time.monotonic() - started < 1.5  # no import left to do
    assert "argv ['--config', 'c.json']" in text and f"cwd {work}" in text and "path0 is cwd True" in text
    assert "run setting at-release import setting at-start" in text
    assert "later imported True collector on True" in text  # a later module that is missing is no failure
    assert (trainer / "imports.log").read_text() == "imported\n"  # imported once, before the run
    assert (trainer / "logs" / "stdout.log").read_bytes().decode() == text  # nothing written before the run
    assert list((trainer / "user").iterdir()) == []  # what the import wrote landed in loraforge's own folder


def test_a_launch_it_cannot_run_is_started_cold_and_the_warm_one_goes(trainer: Path) -> None:
    warm = start_warm(WARM, BackendEnv("fake", Path(sys.executable)))
    assert warm is not None
    several = Launch([sys.executable, "-m", "accelerate.commands.launch", "-m", "slowtrainer.train"], {}, trainer)
    assert warm.release(several, dict(os.environ)) is None
    assert warm.process.poll() is not None  # gone, not left importing in the background


def test_a_warm_start_no_run_needs_exits_quietly(trainer: Path) -> None:
    warm = start_warm(WARM, BackendEnv("fake", Path(sys.executable)))
    assert warm is not None
    time.sleep(3)  # done importing: waiting for a run
    warm.discard()
    assert warm.process.returncode == 0


def test_a_warm_start_still_importing_is_stopped_at_once(trainer: Path) -> None:
    """An error before the run (a typo in the job) must not wait for the trainer's imports."""
    warm = start_warm(WARM, BackendEnv("fake", Path(sys.executable)))
    assert warm is not None
    started = time.monotonic()
    warm.discard()
    assert time.monotonic() - started < 1.5  # the import takes 2 s
    assert warm.process.returncode is not None
    assert not (trainer / "imports.log").exists()


def test_a_failed_import_shows_when_the_run_starts(trainer: Path) -> None:
    (trainer / "lib" / "slowtrainer" / "heavy.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\")")
    warm = start_warm(WARM, BackendEnv("fake", Path(sys.executable)))
    assert warm is not None
    launch = Launch([sys.executable, "-m", "slowtrainer.train"], {}, trainer)
    process = warm.release(launch, dict(os.environ))
    result = run_process(launch.argv, env=dict(os.environ), cwd=trainer, log_dir=trainer / "logs", process=process)
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'torch'" in (trainer / "logs" / "stderr.log").read_text()


def test_warm_starts_can_be_turned_off(trainer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAFORGE_WARM", "0")
    assert start_warm(WARM, BackendEnv("fake", Path(sys.executable))) is None


@pytest.mark.parametrize("backend", ["kohya", "simpletuner"])
def test_a_train_command_starts_the_warm_interpreter_before_loading_the_rest(tmp_path: Path, backend: str) -> None:
    """The trainer's imports overlap all of loraforge's own: by the moment `loraforge train` starts the warm
    interpreter it has read only its flags and the registry, not the job model, the backend or any image library."""
    home = tmp_path / "home"
    home.mkdir()
    entry = {"backend": backend, "python": sys.executable, "root": None, "versions": {}, "managed": False}
    (home / "envs.json").write_text(json.dumps({backend: entry}))
    code = (
        "import sys\nimport orchestrator.warm as warm\n"
        "def noted(*args, **kwargs):\n    print('\\n'.join(sorted(sys.modules)))\n    raise SystemExit(0)\n"
        "warm.start_process = noted\nfrom orchestrator.cli import main\n"
        f"main(['train', {str(tmp_path / 'job.yaml')!r}, '-b', {backend!r}])\n"
    )
    env = {**os.environ, "LORAFORGE_HOME": str(home), "LORAFORGE_WARM": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    modules = set(out.stdout.split())
    assert f"backends.{backend}.warm" in modules, out.stderr  # it got as far as the warm start
    for later in ("pydantic", "jinja2", "yaml", "numpy", "PIL", f"backends.{backend}.backend", "orchestrator.job"):
        assert later not in modules, later
