"""`loraforge demo` end to end on each backend with its real environment (model, data and runs built in tmp; the
tiny models come from the machine's cache, where every integration test shares them)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SETUP = {
    "simpletuner": "run `loraforge setup simpletuner`",
    "kohya": "run `git submodule update --init` then `loraforge setup kohya`",
}


@pytest.mark.parametrize("backend", ["simpletuner", "kohya"])
def test_demo_runs_end_to_end(
    backend: str, real_registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backends import base
    from orchestrator.envs import load_registry, save_env

    env = load_registry().get(backend)
    if env is None or base.get(backend).check(env):
        pytest.skip(f"{backend} is not set up on this machine: {SETUP[backend]}")
    real_tiny = real_registry / "cache" / "tiny"
    real_tiny.mkdir(parents=True, exist_ok=True)
    # Only the registry entry and the tiny-model cache are taken from the machine; data and runs stay in tmp_path.
    monkeypatch.setenv("LORAFORGE_HOME", str(tmp_path / "home"))
    save_env(env)
    (tmp_path / "home" / "cache").mkdir(parents=True)
    (tmp_path / "home" / "cache" / "tiny").symlink_to(real_tiny)
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo", "--backend", backend, "--output-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=1200,
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
