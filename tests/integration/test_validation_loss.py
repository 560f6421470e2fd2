"""Overfitting checks for real: a validation split gives a validation loss at every checkpoint (SimpleTuner in CI;
sd-scripts where it is present), `loraforge runs show` lists both losses, and sd-scripts' samples become events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_simpletuner_tiny import st_env, tiny_job, tiny_root  # noqa: F401  (fixtures)

from orchestrator.events import Checkpoint, Event, Progress, Sample, Validation

pytestmark = pytest.mark.integration


def test_simpletuner_validation_loss_at_every_checkpoint(st_env, tiny_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from orchestrator.training import run_training

    job = tiny_job(st_env, tiny_root, tmp_path, steps=4)
    training = job.training.model_copy(update={"validation_split": 0.25})  # 1 of the 4 images held out
    job = job.model_copy(update={"training": training, "saving": job.saving.model_copy(update={"every_n_steps": 2})})
    seen: list[Event] = []
    outcome = run_training(job, "simpletuner", handlers=[seen.append])
    assert outcome.ok, outcome.failure
    assert [e.step for e in seen if isinstance(e, Checkpoint)] == [2, 4]
    validations = [e for e in seen if isinstance(e, Validation)]
    assert [e.step for e in validations] == [2, 4] and all(0 < e.loss < 10 for e in validations)
    assert "3 images (1 more held out for validation)" in next(e.text for e in seen if hasattr(e, "text"))
    assert max(e.step for e in seen if isinstance(e, Progress)) == 4

    shown = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "runs", "show", str(outcome.run.path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stderr.splitlines() if line.strip("│ ").startswith(("2 ", "4 "))]  # human output
    assert len(rows) == 2
    for row, event in zip(rows, validations, strict=True):
        assert f"{event.loss:.4f}" in row  # the validation loss beside the checkpoint's training loss


@pytest.mark.slow  # sd-scripts on SD 1.5's full-size U-Net with validation and sampling: 5-13 minutes on 2 cores
def test_kohya_validation_loss_and_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import _REAL_HOME
    from test_kohya_tiny import SETUP, write_job

    from backends import base
    from orchestrator.envs import load_registry

    monkeypatch.setenv("LORAFORGE_HOME", str(_REAL_HOME))
    env = load_registry().get("kohya")
    if env is None or base.get("kohya").check(env):
        pytest.skip(f"the kohya backend is not set up: {SETUP}")
    from orchestrator.job import build_job, load_yaml_layer
    from orchestrator.tiny import tiny_sd15
    from orchestrator.tiny.dataset import make_dataset
    from orchestrator.training import run_training

    kohya = {"model": tiny_sd15(env.python), "data": make_dataset(tmp_path / "data", count=8, size=64)}
    data = load_yaml_layer(write_job(tmp_path, kohya, validation_split=0.25))
    data["sampling"] = {"every_n_steps": 2, "prompts": ["a red car on a beach", "a forest at night"], "steps": 2}
    job = build_job(data)
    seen: list[Event] = []
    outcome = run_training(job, "kohya", handlers=[seen.append])
    assert outcome.ok, outcome.failure
    progress = [e.step for e in seen if isinstance(e, Progress)]
    assert progress == sorted(progress) and progress[-1] == 4  # validation bars never rewind the steps
    # every 2 steps, and at the end of epoch 1 (step 3: 6 training images in batches of 2)
    assert [e.step for e in seen if isinstance(e, Validation)] == [2, 3, 4]
    samples = [e for e in seen if isinstance(e, Sample)]
    assert sorted((e.step, e.prompt) for e in samples) == [
        (2, "a forest at night"),
        (2, "a red car on a beach"),
        (4, "a forest at night"),
        (4, "a red car on a beach"),
    ]
    assert all(Path(e.path).stat().st_size > 0 for e in samples)
