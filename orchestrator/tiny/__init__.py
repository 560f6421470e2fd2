"""Tiny, randomly initialised base models and a generated dataset, for the demo and the integration tests.

The models are built by small scripts run with a backend venv's interpreter (the orchestrator never imports torch)
and cached under ``cache_dir()/tiny`` keyed by the script's content, so a changed recipe rebuilds.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from orchestrator.envs import cache_dir
from orchestrator.errors import LoraforgeError

HERE = Path(__file__).resolve().parent


def build_cached(script: str, python: Path, *, name: str, root: Path | None = None) -> Path:
    """Run ``HERE/script OUT`` with ``python`` once; later calls return the cached OUT folder."""
    source = HERE / script
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    out = (root or cache_dir() / "tiny") / f"{name}-{digest}"
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (out.parent / f"{out.name}.partial", out.parent / f"{out.name}.tokenizer"):
        shutil.rmtree(leftover, ignore_errors=True)
    result = subprocess.run([str(python), str(source), str(out)], capture_output=True, text=True)
    if result.returncode != 0 or not out.is_dir():
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise LoraforgeError(
            f"building the tiny {name} model with {python} failed (exit {result.returncode}):\n{tail}",
            "check that the backend environment works: `loraforge doctor`",
        )
    return out


def tiny_sdxl(python: Path, *, root: Path | None = None) -> Path:
    """A ~6 MB SDXL diffusers folder (UNet 1M parameters) that SimpleTuner and diffusers load like the real one."""
    return build_cached("sdxl_script.py", python, name="sdxl", root=root)


def tiny_sd15(python: Path, *, root: Path | None = None) -> Path:
    """An SD 1.5 diffusers folder sd-scripts trains: SD 1.5's UNet geometry (fixed in sd-scripts), tiny text
    encoder and VAE. ~3.2 GB and ~40 s to build on 2 cores: built once, cached."""
    return build_cached("sd15_script.py", python, name="sd15", root=root)


def tiny_sdxl_kohya(python: Path, *, root: Path | None = None) -> Path:
    """An SDXL diffusers folder sd-scripts trains (and SimpleTuner too): SDXL's full UNet (fixed in sd-scripts),
    shallow text encoders of SDXL's widths, tiny VAE. ~5.2 GB (UNet in fp16), built once and cached."""
    return build_cached("sdxl_kohya_script.py", python, name="sdxl-kohya", root=root)
