"""The built-in demo: the whole pipeline on a tiny example, from nothing.

Sets the backend up if it is missing (the same code as `loraforge setup`), builds a tiny random base model and a
small drawn photo set once (cached), then runs what a user runs: prep, template captions with a trigger, training
with live progress, and one sample image from the LoRA through diffusers, written into the run folder.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.envs import BackendEnv, cache_dir, ensure_backend
from orchestrator.errors import LoraforgeError
from orchestrator.training import RunOutcome, run_training

TRIGGER = "ohwx"
PROMPT = f"photo of {TRIGGER}, a red circle on a light background"
DEFAULT_STEPS = {"simpletuner": 10, "kohya": 4}  # sd-scripts trains SD 1.5's full-size UNet: slower per step


@dataclass(frozen=True)
class DemoResult:
    outcome: RunOutcome
    sample: Path | None
    note: str  # what the sample shows (the LoRA's mean pixel change)


def run_demo(
    backend: str, output_dir: Path, *, steps: int | None, console: Any, display: Callable[[], Any]
) -> DemoResult:
    """``display()`` opens the training display (``handle(event)``, ``close()``): only around training, so setup's
    own progress bars draw first."""
    env = ensure_backend(backend, console)
    console.print(f"[bold]1/4[/] tiny base model for {backend} (built once, then cached)")
    model = tiny_model(backend, env)
    console.print("[bold]2/4[/] demo dataset: drawn photos -> prep -> template captions")
    dataset = demo_dataset()
    steps = steps or DEFAULT_STEPS[backend]
    console.print(f"[bold]3/4[/] training {steps} steps with {backend}")
    shown = display()
    try:
        outcome = run_training(demo_job(model, dataset, steps, output_dir), backend, handlers=[shown.handle])
    finally:
        shown.close()
    if not outcome.ok or outcome.lora is None:
        return DemoResult(outcome, None, "")
    console.print("[bold]4/4[/] sample image with the LoRA applied (diffusers)")
    sample = outcome.run.path / "sample.png"
    return DemoResult(outcome, sample, make_sample(env.python, model, outcome.lora, sample))


def tiny_model(backend: str, env: BackendEnv) -> Path:
    from orchestrator import tiny

    return tiny.tiny_sdxl(env.python) if backend == "simpletuner" else tiny.tiny_sd15(env.python)


def demo_dataset() -> Path:
    """Photos drawn once into the cache, prepared and captioned into a fresh dataset folder."""
    from orchestrator.captions import caption_dataset
    from orchestrator.dataset.prep import prepare_dataset
    from orchestrator.tiny.dataset import make_dataset

    root = cache_dir() / "demo"
    photos = root / "photos"
    if not photos.is_dir():
        make_dataset(root / "photos.partial", count=6, size=256, captions=False)
        (root / "photos.partial").rename(photos)
    dataset = root / "dataset"
    shutil.rmtree(dataset, ignore_errors=True)
    prepare_dataset(photos, dataset, subject="object", size=256, crop="center")  # 256: prep's smallest size
    caption_dataset(dataset, captioner="template", trigger=TRIGGER, template="photo of {trigger}", mode="overwrite")
    return dataset


def demo_job(model: Path, dataset: Path, steps: int, output_dir: Path):  # type: ignore[no-untyped-def]
    from orchestrator.job import build_job

    return build_job(
        {
            "name": "demo",
            "base_model": str(model),
            "subject": "object",
            "trigger": TRIGGER,
            "dataset": str(dataset),
            "network": {"rank": 4},
            "training": {
                "steps": steps,
                "resolution": 128,
                "precision": "fp32",
                "gradient_checkpointing": False,
                "learning_rate": 1e-3,
            },
            "saving": {"every_n_steps": max(1, steps // 2), "keep_last": 2},
            "output": {"dir": str(output_dir.resolve())},
        },
        "the demo job",
    )


def make_sample(python: Path, model: Path, lora: Path, out: Path) -> str:
    script = Path(__file__).resolve().parent / "tiny" / "sample_script.py"
    result = subprocess.run(
        [str(python), str(script), str(model), str(lora), str(out), PROMPT, "2", "128"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not out.exists():
        tail = "\n".join(result.stderr.strip().splitlines()[-10:])
        raise LoraforgeError(f"generating the sample image failed:\n{tail}", "the LoRA itself is fine; see above")
    lines = [line for line in result.stdout.splitlines() if "mean pixel change" in line]
    return lines[-1].split("; ", 1)[-1] if lines else "written"
