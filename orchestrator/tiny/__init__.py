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
from orchestrator.errors import LoraforgeError, NotEnoughDisk

HERE = Path(__file__).resolve().parent


def build_cached(script: str, python: Path, *, name: str, root: Path | None = None, size_gb: float = 0.1) -> Path:
    """Run ``HERE/script OUT`` with ``python`` once; later calls return the cached OUT folder. ``size_gb``: the disk
    the model takes, checked before building (a full disk found half way through is a worse message)."""
    source = HERE / script
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    out = (root or cache_dir() / "tiny") / f"{name}-{digest}"
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(out.parent).free / 1e9
    if free_gb < size_gb + 0.3:  # and a little for the runs that use it
        raise NotEnoughDisk(
            f"building the tiny {name} model needs about {size_gb:.1f} GB in {out.parent}; it has {free_gb:.1f} GB free",
            "free some disk space, or set LORAFORGE_HOME to a folder on a larger disk",
        )
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
    encoder and VAE. ~0.26 GB of disk (a sparse fp16 file: its 1280-wide blocks are zero) and ~40 s to build on
    2 cores: built once, cached."""
    return build_cached("sd15_script.py", python, name="sd15", root=root, size_gb=0.3)


def tiny_sdxl_kohya(python: Path, *, root: Path | None = None) -> Path:
    """An SDXL diffusers folder sd-scripts trains (and SimpleTuner too): SDXL's full UNet (fixed in sd-scripts),
    shallow text encoders of SDXL's widths, tiny VAE. ~5.2 GB (UNet in fp16), built once and cached."""
    return build_cached("sdxl_kohya_script.py", python, name="sdxl-kohya", root=root, size_gb=5.3)


def _siblings(name: str, *scripts: str) -> str:
    """``name`` tagged with the content of the sibling scripts a builder imports (build_cached hashes only its own
    script), so a changed tokenizer recipe rebuilds every model that uses it."""
    digest = hashlib.sha256(b"".join((HERE / s).read_bytes() for s in scripts)).hexdigest()[:6]
    return f"{name}-{digest}"


def tiny_lumina2(python: Path, *, root: Path | None = None) -> Path:
    """A ~2 MB Lumina Image 2.0 diffusers folder (Lumina2Pipeline: Next-DiT hidden 32, two-layer Gemma 2, 16-channel
    VAE) that SimpleTuner (model_family lumina2) and diffusers load. ``python`` needs diffusers >= 0.33 (SimpleTuner's
    venv). sd-scripts cannot train it: see tiny_lumina2_kohya."""
    return build_cached("lumina2_script.py", python, name=_siblings("lumina2", "sdxl_script.py"), root=root)


def tiny_lumina2_kohya(python: Path, *, root: Path | None = None) -> Path:
    """Lumina Image 2.0 at the geometry sd-scripts fixes in its source (Next-DiT 2B and Gemma 2 2B full size, FLUX
    AE; tiny tokenizer), random bf16 weights written twice from the same numbers: ``kohya/`` holds the single files
    lumina_train_network.py takes (lumina2, gemma2, ae .safetensors and tokenizer_cache/), the folder itself is a
    Lumina2Pipeline for SimpleTuner and diffusers. ~15 GB, ~4 min to build on 2 cores with ~3 GB of RAM: built once,
    cached. ``python`` needs diffusers >= 0.33 (SimpleTuner's venv)."""
    name = _siblings("lumina2-kohya", "lumina2_script.py", "sdxl_script.py")
    return build_cached("lumina2_kohya_script.py", python, name=name, root=root, size_gb=15)


def tiny_qwen_image(python: Path, *, root: Path | None = None) -> Path:
    """A ~11 MB Qwen-Image diffusers folder (QwenImagePipeline: transformer hidden 32, two-layer Qwen2.5-VL, Qwen's
    causal VAE at base width 16) that SimpleTuner (model_family qwen_image, model_flavour v1.0) and diffusers load.
    ``python`` needs diffusers >= 0.35 (SimpleTuner's venv)."""
    return build_cached("qwen_image_script.py", python, name=_siblings("qwen-image", "sdxl_script.py"), root=root)


def tiny_flux2(python: Path, *, root: Path | None = None) -> Path:
    """A ~3 MB FLUX.2-dev diffusers folder (Flux2Pipeline: transformer hidden 32, thirty-layer Mistral-3 of width 32,
    32-channel VAE) that SimpleTuner (model_family flux2, model_flavour dev) and diffusers load. SimpleTuner loads
    Mistral-3 only by its hub id, so run it with HF_HUB_CACHE=<folder>/hf-cache (a hub cache entry for that id,
    links into the folder). ``python`` needs diffusers >= 0.36 (SimpleTuner's venv)."""
    name = _siblings("flux2", "qwen_image_script.py", "sdxl_script.py")
    return build_cached("flux2_script.py", python, name=name, root=root)


def tiny_sd3(python: Path, *, root: Path | None = None) -> Path:
    """An SD3.5 model in both trainers' layouts from the same weights: the folder is a StableDiffusion3Pipeline
    (MMDiT with two blocks, hidden 128, SD3.5-large block type; CLIP-L, CLIP-G and T5 of their real widths with one
    zero layer; SD3's 16-channel VAE at full size) for SimpleTuner (model_family sd3) and diffusers, ~0.4 GB;
    ``kohya/`` holds sd3_train_network.py's single files (sd3, clip_l, clip_g, t5xxl, vae .safetensors and
    tokenizers/), the text encoders at the full size sd-scripts fixes, as sparse files (T5-XXL reads as 9.5 GB, ~2 MB
    on disk; sd-scripts maps it all in bf16). ~20 s to build. ``python`` needs diffusers >= 0.33 (SimpleTuner's venv)."""
    name = _siblings("sd3", "flux_script.py", "sdxl_script.py")
    return build_cached("sd3_script.py", python, name=name, root=root, size_gb=0.6)


def tiny_chroma(python: Path, *, root: Path | None = None) -> Path:
    """A Chroma model in both trainers' layouts from the same weights: the folder is a ChromaPipeline (one double and
    one single block at Chroma's fixed width 3072, ~420 M parameters; T5 of width 4096 with one zero layer; the
    16-channel VAE) for SimpleTuner (model_family chroma) and diffusers, ~1.9 GB; ``kohya/`` holds
    `flux_train_network.py --model_type chroma`'s single files (chroma, t5xxl, ae .safetensors and tokenizers/):
    sd-scripts builds only the full 8.9 B Chroma, so its file is full size with the other 55 blocks zero, a sparse
    file (17.8 GB read, ~0.7 GB on disk) that computes what the small one does; sd-scripts maps and computes all of
    it (bf16, ~5 min a step on 2 cores). ~50 s and ~4.5 GB of RAM to build.
    ``python`` needs diffusers >= 0.35 (SimpleTuner's venv)."""
    name = _siblings("chroma", "sd3_script.py", "flux_script.py", "sdxl_script.py")
    return build_cached("chroma_script.py", python, name=name, root=root, size_gb=2.9)


# The tiny model of each family the families issue added, by family name (for the tests that go through them all)
FAMILY_BUILDERS = {
    "sd3": tiny_sd3,
    "chroma": tiny_chroma,
    "lumina2": tiny_lumina2,
    "qwen_image": tiny_qwen_image,
    "flux2": tiny_flux2,
}
