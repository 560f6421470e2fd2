"""Images from a LoRA through diffusers, run in a Python that has diffusers (a backend's venv), never imported here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from orchestrator.errors import LoraforgeError

SCRIPT = Path(__file__).resolve().parent.parent / "tiny" / "sample_script.py"  # one image per call (demo, tests)
WORKER = Path(__file__).resolve().parent / "sample_worker.py"


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
    scale: float = 1.0,
    guidance: float = 1.0,
) -> list[Path]:
    """One PNG per (prompt, seed), named by their index, from one pipeline load in ``python`` (which has diffusers).
    ``scale`` weights the LoRA (0 = base model). ``guidance`` 1 (the default here, as before; the CLI uses 7) skips
    classifier-free guidance: half the cost."""
    import json

    python = python or diffusers_python()
    args = {
        "base_model": base_model,
        "lora": str(lora),
        "prompts": prompts,
        "seeds": seeds,
        "out_dir": str(out_dir),
        "steps": steps,
        "size": size,
        "scale": scale,
        "guidance": guidance,
    }
    result = subprocess.run([str(python), str(WORKER), json.dumps(args)], capture_output=True, text=True)
    written = [Path(json.loads(line)["path"]) for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or len(written) != len(prompts) * len(seeds):
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise LoraforgeError(
            f"generating samples from {lora} failed:\n{tail}", "check the base model and the LoRA's family"
        )
    return written


def pixel_change(stdout: str) -> float | None:
    match = re.search(r"mean pixel change from the LoRA: ([\d.]+)", stdout)
    return float(match.group(1)) if match else None
