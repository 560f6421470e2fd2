"""A LoRA from a real sd-scripts run on the tiny SD 1.5, converted to diffusers and back: the round trip is exact and
both layouts load in diffusers (load_lora_weights, in the SimpleTuner venv that has peft) and change the image.

Needs the kohya backend (sd-scripts) and the SimpleTuner env (diffusers + peft); skipped where either is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_kohya_tiny import kohya, write_job  # noqa: F401  (fixtures)

from orchestrator.lora.convert import convert
from orchestrator.lora.inspect import describe
from orchestrator.lora.safetensors_io import read
from orchestrator.lora.sample import SCRIPT, generate, pixel_change

pytestmark = pytest.mark.integration


def test_a_kohya_lora_converts_exactly_and_loads_in_diffusers(
    tmp_path: Path,
    kohya: dict,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestrator.envs import load_registry

    monkeypatch.setenv("LORAFORGE_HOME", str(kohya["home"]))
    st = load_registry().get("simpletuner")
    if st is None or not st.python.exists():
        pytest.skip("needs a Python with diffusers and peft: run `loraforge setup simpletuner`")
    job = write_job(tmp_path, kohya, steps=2)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "train", str(job), "--backend", "kohya", "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lora = Path(json.loads(out.stdout.splitlines()[-1])["lora_path"])
    info = describe(lora)
    assert info["layout"] == "kohya" and info["rank"] == 4

    diffusers = convert(lora, tmp_path / "diffusers.safetensors", "diffusers")
    assert describe(diffusers)["layout"] == "diffusers"
    back = convert(diffusers, tmp_path / "kohya-again.safetensors", "kohya")
    k1, meta1 = read(lora)
    k2, meta2 = read(back)
    assert {k: t.data for k, t in k1.items()} == {k: t.data for k, t in k2.items()}  # exact, alpha included
    assert meta2["ss_network_dim"] == meta1["ss_network_dim"]

    for path in (lora, diffusers):
        png = tmp_path / f"{path.stem}.png"
        result = subprocess.run(
            [str(st.python), str(SCRIPT), str(kohya["model"]), str(path), str(png), "photo of ohwx", "2", "64", "7"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        change = pixel_change(result.stdout)
        assert change is not None and change > 0, (path.name, result.stdout)
    # the sampler's peft path: load_lora_weights, then the adapter weighted by --scale
    (png,) = generate(
        diffusers, str(kohya["model"]), ["a cat"], [3], tmp_path / "s", st.python, steps=2, size=64, scale=0.5
    )
    assert png.name == "sample-00-seed3.png" and png.stat().st_size > 0


def test_sample_generates_every_prompt_and_seed_from_one_pipeline_load(
    tmp_path: Path,
    kohya: dict,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`loraforge sample` through the worker: the Kohya layout in sd-scripts' venv (merged, no peft), at scale 0.5."""
    from orchestrator.cli import main
    from orchestrator.envs import load_registry

    monkeypatch.setenv("LORAFORGE_HOME", str(kohya["home"]))
    env = load_registry()["kohya"]
    job = write_job(tmp_path, kohya, steps=1)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "train", str(job), "--backend", "kohya", "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lora = json.loads(out.stdout.splitlines()[-1])["lora_path"]
    argv = ["sample", lora, "--base-model", str(kohya["model"]), "--prompt", "photo of ohwx", "--prompt", "a cat"]
    argv += ["--seed", "1", "--seed", "2", "--scale", "0.5", "--steps", "2", "--size", "64", "--guidance", "1"]
    argv += ["--python", str(env.python), "-o", str(tmp_path / "samples")]
    assert main(argv) == 0
    names = sorted(p.name for p in (tmp_path / "samples").glob("*.png"))
    assert names == ["sample-00-seed1.png", "sample-00-seed2.png", "sample-01-seed1.png", "sample-01-seed2.png"]
