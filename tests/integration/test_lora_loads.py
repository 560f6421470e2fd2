"""A LoRA from a real SimpleTuner run on the tiny SDXL, converted both ways, loads in diffusers and changes the
image compared with the base model (so the weights really apply), in either layout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_simpletuner_tiny import st_env, tiny_job, tiny_root  # noqa: F401  (fixtures)

from orchestrator.lora.convert import convert
from orchestrator.lora.inspect import describe
from orchestrator.lora.safetensors_io import read
from orchestrator.lora.sample import SCRIPT, pixel_change

pytestmark = pytest.mark.integration


def test_converted_loras_load_in_diffusers_and_change_the_image(st_env, tiny_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from orchestrator.training import run_training

    job = tiny_job(st_env, tiny_root, tmp_path, steps=2)
    outcome = run_training(job, "simpletuner")
    assert outcome.ok, outcome.failure
    kohya = outcome.lora
    assert describe(kohya)["layout"] == "kohya"
    diffusers = convert(kohya, tmp_path / "diffusers.safetensors", "diffusers")
    back = convert(diffusers, tmp_path / "kohya-again.safetensors", "kohya")
    k1, _ = read(kohya)
    k2, _ = read(back)
    assert {k: t.data for k, t in k1.items()} == {k: t.data for k, t in k2.items()}  # exact round trip

    for lora in (kohya, diffusers):
        out = tmp_path / f"{lora.stem}.png"
        result = subprocess.run(
            [str(st_env.python), str(SCRIPT), job.base_model, str(lora), str(out), "photo of ohwx", "2", "64", "7"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        change = pixel_change(result.stdout)
        assert change is not None and change > 0, (lora.name, result.stdout)
