"""Images from a LoRA through diffusers, run in a Python that has diffusers (a backend's venv), never imported here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from orchestrator.errors import LoraforgeError

SCRIPT = Path(__file__).resolve().parent.parent / "tiny" / "sample_script.py"


def diffusers_python() -> Path:
    """A registered backend venv (SimpleTuner's has diffusers and peft; sd-scripts' has diffusers), else our own."""
    from orchestrator.envs import load_registry

    registry = load_registry()
    for name in ("simpletuner", "kohya"):
        env = registry.get(name)
        if env is not None and env.python.exists():
            return env.python
    try:
        import importlib.util

        if importlib.util.find_spec("diffusers") is not None:
            return Path(sys.executable)
    except ImportError:
        pass
    raise LoraforgeError(
        "no Python with diffusers found to generate images",
        "set up a backend (`loraforge setup simpletuner`) or `pip install diffusers peft`",
    )


def generate(
    lora: Path,
    base_model: str,
    prompts: list[str],
    seeds: list[int],
    out_dir: Path,
    python: Path | None = None,
    *,
    steps: int = 20,
    size: int = 1024,
) -> list[Path]:
    """One PNG per (prompt, seed), named by their index; each log line says how much the LoRA changed the pixels."""
    python = python or diffusers_python()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, prompt in enumerate(prompts):
        for seed in seeds:
            out = out_dir / f"sample-{i:02d}-seed{seed}.png"
            result = subprocess.run(
                [str(python), str(SCRIPT), base_model, str(lora), str(out), prompt, str(steps), str(size), str(seed)],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0 or not out.exists():
                tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
                raise LoraforgeError(
                    f"generating {out.name} failed:\n{tail}", "check the base model and the LoRA's family"
                )
            written.append(out)
    return written


def pixel_change(stdout: str) -> float | None:
    match = re.search(r"mean pixel change from the LoRA: ([\d.]+)", stdout)
    return float(match.group(1)) if match else None
