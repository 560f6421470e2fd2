"""`loraforge demo` end to end with the real SimpleTuner environment (its tiny model and data built in tmp)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end(real_registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backends.simpletuner import SimpleTunerBackend
    from orchestrator.envs import load_registry, save_env

    env = load_registry().get("simpletuner")
    if env is None or SimpleTunerBackend().check(env):
        pytest.skip("SimpleTuner is not set up on this machine: run `loraforge setup simpletuner`")
    # Only the registry entry is taken from the machine; caches, models and runs stay in tmp_path.
    monkeypatch.setenv("LORAFORGE_HOME", str(tmp_path / "home"))
    save_env(env)
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo", "--steps", "4", "--output-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "output" / "demo.safetensors").stat().st_size > 0
    from PIL import Image

    with Image.open(run / "sample.png") as sample:
        assert sample.size == (128, 128)
        assert sample.getextrema() != ((0, 0), (0, 0), (0, 0))  # not a blank image
    change = re.search(r"mean pixel change from the LoRA: ([\d.]+)", output)
    assert change and float(change.group(1)) > 0  # the LoRA really applied
    captions = sorted((tmp_path / "home" / "cache" / "demo" / "dataset").glob("*.txt"))
    assert captions and all(c.read_text().startswith("photo of ohwx") for c in captions)
