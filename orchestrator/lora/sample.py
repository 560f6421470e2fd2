"""Images from a LoRA through diffusers, run in a Python that has diffusers (a backend's venv), never imported here.

A Kohya-layout LoRA of a transformer family (SD3, Flux, Chroma, Lumina 2) is converted to the diffusers layout first
(convert.py, into a temporary folder): diffusers' SD3 and Lumina 2 loaders read none of sd-scripts' module names and
load nothing without a word, and its Kohya-Flux reader splits linear1 at FLUX.1's fixed widths and drops the guidance
and final-layer modules. SD 1.5 and SDXL files go as they are (diffusers reads their Kohya names itself).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

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
    guidance: float | None = 1.0,
    max_tokens: int | None = None,
) -> list[Path]:
    """One PNG per (prompt, seed), named by their index, from one pipeline load in ``python`` (which has diffusers).
    ``scale`` weights the LoRA (0 = base model). ``guidance`` 1 (the default here) skips classifier-free guidance
    (half the cost; for Flux and FLUX.2 it is their distilled guidance value); None leaves each pipeline's own
    default (the CLI's default). ``max_tokens`` caps the prompt's tokens where the pipeline has max_sequence_length
    (T5, Gemma, Mistral and Qwen encoders; default: the pipeline's)."""
    found = samples(lora, base_model, prompts, seeds, out_dir, python, steps=steps, size=size, scale=scale,
                    guidance=guidance, max_tokens=max_tokens)  # fmt: skip
    return [Path(s["path"]) for s in found]


def samples(
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
    guidance: float | None = 1.0,
    max_tokens: int | None = None,
) -> list[dict[str, Any]]:
    """As :func:`generate`, with what the worker says of each image: path, prompt, seed and pixel_change (the mean
    absolute difference from the same seed without the LoRA, 0..1)."""
    import json

    python = python or diffusers_python()
    args = {"base_model": base_model, "prompts": prompts, "seeds": seeds, "out_dir": str(out_dir), "steps": steps}
    args |= {"size": size, "scale": scale, "guidance": guidance, "max_tokens": max_tokens}
    with tempfile.TemporaryDirectory(prefix="loraforge-sample-") as tmp:
        args["lora"] = str(diffusers_readable(lora, Path(tmp)))
        result = subprocess.run([str(python), str(WORKER), json.dumps(args)], capture_output=True, text=True)
    found = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or len(found) != len(prompts) * len(seeds):
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise LoraforgeError(
            f"generating samples from {lora} failed:\n{tail}", "check the base model and the LoRA's family"
        )
    return found


def diffusers_readable(lora: Path, tmp: Path) -> Path:
    """``lora`` itself, or its diffusers-layout conversion in ``tmp`` where diffusers would misread the Kohya layout."""
    from orchestrator.lora import keys as K
    from orchestrator.lora.convert import LAYOUTS, convert
    from orchestrator.lora.family import lora_family
    from orchestrator.lora.safetensors_io import read_header

    header, metadata, _ = read_header(lora)
    shapes = {name: entry["shape"] for name, entry in header.items()}
    if K.layout(list(shapes)) != "kohya" or lora_family(shapes, metadata).family not in LAYOUTS:
        return lora
    return convert(lora, tmp / lora.name, "diffusers")


def pixel_change(stdout: str) -> float | None:
    match = re.search(r"mean pixel change from the LoRA: ([\d.]+)", stdout)
    return float(match.group(1)) if match else None
