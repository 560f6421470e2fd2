"""sd-scripts' disk caches that a later run on this machine may reuse (orchestrator/reuse.py): the latents it writes
with ``cache_latents_to_disk`` and the text encoders' outputs it writes with ``cache_text_encoder_outputs_to_disk``.

sd-scripts writes them beside each image, here the run's own copy of the dataset (never the user's folder), as
``<image stem>_<WWWW>x<HHHH><latents suffix>`` and ``<image stem><outputs suffix>`` (suffixes below, from its
library/strategy_*.py at 48d368fa). Before it uses an existing file it checks only that the arrays it needs are in
it (``is_disk_cached_latents_expected``: ``latents``, ``latents_flipped`` with flip_aug, ``alpha_mask``; for the text
encoders their outputs and, for Flux, apply_t5_attn_mask), never which model, image, bucket or caption made it: an
SD 1.5 / SDXL file made at another resolution is loaded as it is. So each key below covers everything the values
depend on, and a change is another key (a fresh folder), never a stale file reaching sd-scripts.

sd-scripts seeds its random generator once, before caching, and its VAE samples each latent from that generator: a
run that loads the latents instead draws the LoRA's initial weights and the noise from another point of the stream.
It trains as well, but not bit for bit as the run that computed them; runs that reuse the same files agree.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from backends.kohya.families import family
from orchestrator.dataset.model import IMAGE_SUFFIXES
from orchestrator.envs import BackendEnv
from orchestrator.job import JobSpec
from orchestrator.reuse import Reuse, files_signature, key
from orchestrator.userpath import user_path

# family -> the suffix of its latents files (library/strategy_sd.py, _sd3.py, _flux.py, _lumina.py; Chroma is
# trained by flux_train_network.py with the Flux strategies)
LATENTS = {
    "sd15": "_sd.npz",
    "sdxl": "_sdxl.npz",
    "sd3": "_sd3.npz",
    "flux": "_flux.npz",
    "chroma": "_flux.npz",
    "lumina2": "_lumina.npz",
}
# family -> the name ending of its text-encoder outputs files (library/strategy_sdxl.py, _sd3.py, _flux.py, _lumina.py)
TEXT_ENCODER_OUTPUTS = {
    "sdxl": "_te_outputs.npz",
    "sd3": "_sd3_te.npz",
    "flux": "_flux_te.npz",
    "chroma": "_flux_te.npz",
    "lumina2": "_lumina_te.npz",
}
# The dataset config's values that change no cached value: how many images a step takes, how often each is seen,
# where the folder is, which images are held out (both datasets cache into the same folder, by image)
_NOT_CACHED = frozenset({"batch_size", "num_repeats", "image_dir", "validation_split", "validation_seed"})
# The dataset config's values that change latents only: the buckets an image is resized and cropped to
_BUCKETS = frozenset({"resolution", "enable_bucket", "bucket_no_upscale", "min_bucket_reso", "max_bucket_reso",
                      "bucket_reso_steps"})  # fmt: skip
# What the run's options say about what made the caches: the model's dtype and what sd-scripts feeds the encoders
_PRECISION = (
    "mixed_precision",
    "no_half_vae",
    "full_fp16",
    "full_bf16",
    "fp8_base",
    "sdpa",
    "xformers",
    "mem_eff_attn",
)


def reuse(
    job: JobSpec, options: dict[str, Any], parts: dict[str, str], data: Path, dataset_config: Path, env: BackendEnv
) -> list[Reuse]:
    """The caches this run writes into ``data`` (its copy of the dataset, captions written) that a later run may
    reuse: none unless the options cache them to disk. ``parts``: the model's files beside the base model."""
    spec = family(job.family)
    latents, outputs = LATENTS.get(spec.name), TEXT_ENCODER_OUTPUTS.get(spec.name)
    to_disk = options.get("cache_latents_to_disk") and latents
    te_to_disk = options.get("cache_text_encoder_outputs_to_disk") and outputs
    if not (to_disk or te_to_disk):
        return []
    extra = job.backend_args.get("kohya", {})  # any of sd-scripts' options: all of them in the key (flip_aug, vae...)
    models = [job.base_model, *parts.values(), *([extra["vae"]] if isinstance(extra.get("vae"), str) else [])]
    common = (
        "kohya",
        spec.name,
        env.versions,  # sd-scripts' commit, torch, diffusers, transformers, the device
        None if env.versions.get("sd-scripts") or env.root is None else files_signature(env.root / "library"),
        [files_signature(Path(m)) if user_path(m).exists() else m for m in models],  # a hub id: a snapshot
        {name: options.get(name) for name in _PRECISION},
        spec.options,
        extra,
    )
    settings = _dataset_settings(dataset_config)
    images = [p for p in sorted(data.iterdir()) if p.name.lower().endswith(IMAGE_SUFFIXES) and p.name[0] != "."]
    found: list[Reuse] = []
    if to_disk:
        # the VAE samples each latent from its distribution: the seed decides which sample (the same job, the same)
        content = [files_signature(p)[0] for p in images]  # name, size, time: never reading the photos
        made_of = ("kohya latents", *common, settings, job.training.seed, content)
        found.append(Reuse(data, key(*made_of), "latents", f"*{latents}"))
    if te_to_disk:
        length = options.get(spec.token_length[0]) if spec.token_length else None
        captions = [(p.name, _caption(p)) for p in images]  # each file is named after its image
        made_of = ("kohya text", *common, _without(settings, _BUCKETS), length, captions)
        found.append(Reuse(data, key(*made_of), "text-encoder outputs", f"*{outputs}"))
    return found


def _dataset_settings(path: Path) -> dict[str, Any]:
    """The rendered dataset config without what changes no cached value: resolution, buckets, captions' settings and
    any augmentation a later template adds are in (a new setting invalidates until it is known not to matter)."""
    parsed = tomllib.loads(path.read_text(encoding="utf-8"))
    groups = [
        {**{k: v for k, v in group.items() if k not in _NOT_CACHED and k != "subsets"},
         "subsets": [{k: v for k, v in subset.items() if k not in _NOT_CACHED} for subset in group.get("subsets", [])]}
        for group in parsed.get("datasets", [])
    ]  # fmt: skip
    return {"general": parsed.get("general", {}), "datasets": groups}


def _without(settings: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    return {**settings, "datasets": [{k: v for k, v in g.items() if k not in names} for g in settings["datasets"]]}


def _caption(image: Path) -> str | None:
    caption = image.with_suffix(".txt")
    return caption.read_text(encoding="utf-8") if caption.is_file() else None
