"""`loraforge demo [--backend simpletuner|kohya]`: the whole pipeline on a tiny built-in example, from nothing.

Sets the backend up if it is missing (a progress bar and the disk size first), builds a tiny random base model and
a small drawn photo set once (cached), then runs what a user runs: prep, template captions with a trigger,
training with live progress, and one sample image from the LoRA through diffusers, written into the run folder.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path
from typing import Any

TRIGGER = "ohwx"
PROMPT = f"photo of {TRIGGER}, a red circle on a light background"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", "-b", choices=["simpletuner", "kohya"], default="simpletuner")
    parser.add_argument("--output-dir", default="runs", help="folder for the run folder (default: ./runs)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps (default: 10; 4 with kohya, whose SD 1.5 UNet is full size)",
    )
    parser.add_argument("--json", action="store_true", help="training events as JSON lines on stdout")
    parser.add_argument("--quiet", "-q", action="store_true")


def run(args: argparse.Namespace) -> int:
    from orchestrator.display import console

    con = console()
    started = time.monotonic()
    env = ensure_backend(args.backend, con)
    con.print(f"[bold]1/4[/] tiny base model for {args.backend} (built once, then cached)")
    model = tiny_model(args.backend, env.python)
    con.print("[bold]2/4[/] demo dataset: drawn photos -> prep -> template captions")
    dataset = demo_dataset()
    if args.steps is None:
        args.steps = 4 if args.backend == "kohya" else 10
    con.print(f"[bold]3/4[/] training {args.steps} steps with {args.backend}")
    outcome = train(args, model, dataset)
    if not outcome.ok:
        return outcome.returncode or 1
    con.print("[bold]4/4[/] sample image with the LoRA applied (diffusers)")
    sample = outcome.run.path / "sample.png"
    note = make_sample(env.python, model, outcome.lora, sample)
    con.print(f"[green]demo finished[/] in {time.monotonic() - started:.0f} s")
    con.print(f"  LoRA:   {outcome.lora}\n  sample: {sample} ({note})\n  run:    {outcome.run.path}")
    return 0


def ensure_backend(name: str, con: Any):  # type: ignore[no-untyped-def]
    """The registered environment, set up first (creating its venv) when there is none."""
    from backends import base
    from orchestrator.envs import load_registry, save_env
    from orchestrator.errors import BackendNotReady

    backend = base.get(name)
    env = load_registry().get(name)
    if env is not None and env.python.exists() and not backend.check(env):
        return env
    con.print(f"the {name} backend is not set up yet: setting it up now (one time)")
    env = backend.setup(python=None, venv=None, root=None, force=env is not None, console=con)  # type: ignore[attr-defined]
    problems = backend.check(env)
    if problems:
        raise BackendNotReady(f"{name}: {problems[0].message}", problems[0].fix)
    save_env(env)
    return env


def tiny_model(backend: str, python: Path) -> Path:
    from orchestrator import tiny

    if backend == "simpletuner":
        return tiny.tiny_sdxl(python)
    builder = getattr(tiny, "tiny_sd15", None)
    if builder is None:
        from orchestrator.errors import LoraforgeError

        raise LoraforgeError("this build has no tiny SD 1.5 builder for the kohya demo", "use --backend simpletuner")
    return builder(python)


def demo_dataset() -> Path:
    """Photos drawn once into the cache, prepared and captioned into a fresh dataset folder."""
    import shutil

    from orchestrator.captions import caption_dataset
    from orchestrator.dataset.prep import prepare_dataset
    from orchestrator.envs import cache_dir
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


def train(args: argparse.Namespace, model: Path, dataset: Path):  # type: ignore[no-untyped-def]
    from orchestrator.display import make_display
    from orchestrator.job import build_job
    from orchestrator.training import run_training

    job = build_job(
        {
            "name": "demo",
            "base_model": str(model),
            "subject": "object",
            "trigger": TRIGGER,
            "dataset": str(dataset),
            "network": {"rank": 4},
            "training": {
                "steps": args.steps,
                "resolution": 128,
                "precision": "fp32",
                "gradient_checkpointing": False,
                "learning_rate": 1e-3,
            },
            "saving": {"every_n_steps": max(1, args.steps // 2), "keep_last": 2},
            "output": {"dir": str(Path(args.output_dir).resolve())},
        },
        "the demo job",
    )
    display = make_display(json_mode=args.json, quiet=args.quiet, title="demo")
    try:
        return run_training(job, args.backend, handlers=[display.handle])
    finally:
        display.close()


def make_sample(python: Path, model: Path, lora: Path, out: Path) -> str:
    from orchestrator.errors import LoraforgeError

    script = Path(__file__).resolve().parent.parent / "tiny" / "sample_script.py"
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
