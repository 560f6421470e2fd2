"""Preflight: everything checked before a run starts, each problem one clear message, and the job resolved.

The dataset is read once here (orchestrator.dataset.model) and handed on: the step plan, rendering, the LoRA's
metadata and reports all use the same images and captions. The trigger is checked against every caption.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from backends import base
from backends.base import Backend
from orchestrator.dataset.model import Dataset, load_dataset
from orchestrator.envs import BackendEnv, get_env, load_registry, nvidia_gpu_present, resolve_runtime
from orchestrator.errors import BackendNotReady, LoraforgeError
from orchestrator.job import Family, JobSpec
from orchestrator.steps import StepPlan, apply_step_plan
from orchestrator.userpath import user_path


@dataclass(frozen=True)
class Ready:
    """A job checked and resolved before anything launches: its family and explicit step count filled in, the
    backend's environment, the dataset exactly as the trainer will see it (captions as trained), the step plan,
    and notes for the run's log."""

    job: JobSpec
    backend: Backend
    env: BackendEnv
    dataset: Dataset
    plan: StepPlan
    notes: tuple[str, ...] = ()


def looks_like_path(text: str) -> bool:
    """A local path (which must exist) rather than a hub id like ``org/name``."""
    if text.startswith(("/", "./", "../", "~", "\\")) or Path(text).exists():
        return True
    return Path(text).suffix.lower() in (".safetensors", ".ckpt", ".pt", ".bin", ".pth")


def preflight(job: JobSpec, backend_name: str, *, need_env: bool = True) -> Ready:
    """Everything that can be checked before launching, each with one clear message. ``need_env`` False (render):
    a backend that is not set up is no error; its settings are previewed for this machine's device."""
    backend = base.get(backend_name)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the environment check runs the backend's interpreter: beside the dataset read, off the critical path
        checking = pool.submit(_environment, backend, need_env)
        dataset = load_dataset(Path(job.dataset))
        notes = [f"skipped {name}: {why}" for name, why in dataset.unreadable[:5]]
        if len(dataset.unreadable) > 5:
            notes.append(f"... and {len(dataset.unreadable) - 5} more unreadable images skipped")
        if not dataset.images:
            raise LoraforgeError(
                f"dataset folder {dataset.root} has no images a trainer reads (.png .jpg .jpeg .webp .bmp; hidden "
                "folders are skipped)",
                f"put your photos there, or prepare them with `loraforge prep PHOTOS -o {dataset.root}`",
            )
        dataset, trigger_note = _check_trigger(job, dataset)
        notes += trigger_note
        job = _with_family(job, backend)
        env = checking.result()
    job, plan = apply_step_plan(job, dataset.sizes(), backend.name)
    return Ready(job, backend, env, dataset, plan, tuple(notes))


def _check_trigger(job: JobSpec, dataset: Dataset) -> tuple[Dataset, list[str]]:
    """Never train silently without the trigger: every caption holds it, or the run is refused with the fix, or
    (``add_trigger``) it is put in front in the run's copy of the captions."""
    if not job.trigger:
        return dataset, []
    missing = dataset.without_trigger(job.trigger)
    if not missing:
        return dataset, []
    if job.add_trigger:
        note = f"trigger {job.trigger!r} added to {len(missing)} of {dataset.count} captions (in this run's copy only)"
        return dataset.with_trigger(job.trigger), [note]
    examples = ", ".join(image.name for image in missing[:3]) + (", ..." if len(missing) > 3 else "")
    quoted = job.trigger.replace('"', '\\"')
    raise LoraforgeError(
        f"{len(missing)} of {dataset.count} captions in {dataset.root} lack the trigger {job.trigger!r} ({examples}): "
        "the LoRA would not learn it",
        f'loraforge caption {dataset.root} --trigger "{quoted}" --captioner template (adds it to every caption), '
        "or train with --add-trigger (add_trigger: true) to add it to this run's copy only",
    )


def _with_family(job: JobSpec, backend: Backend) -> JobSpec:
    if looks_like_path(job.base_model) and not user_path(job.base_model).exists():
        raise LoraforgeError(
            f"base model {job.base_model} does not exist",
            "pass a local .safetensors file, a diffusers folder, or a hub id such as stabilityai/stable-diffusion-xl-base-1.0",
        )
    if job.family is None:
        from orchestrator.basemodel import infer_family

        family = infer_family(job.base_model)
        if family is None:
            raise LoraforgeError(
                f"cannot tell the model family of {job.base_model}",
                f"set it: family: {' | '.join(get_args(Family))} (or --family)",
            )
        job = job.model_copy(update={"family": family})
    if job.family not in backend.families:
        why = backend.refused.get(job.family or "", f"{backend.name} trains {', '.join(sorted(backend.families))}")
        others = [n for n in base.names() if n != backend.name and job.family in base.get(n).families]
        raise LoraforgeError(
            f"the {backend.name} backend cannot train {job.family} models: {why}",
            f"use --backend {others[0]}" if others else "choose another base model",
        )
    return job


def _environment(backend: Backend, need_env: bool) -> BackendEnv:
    if need_env:
        env = get_env(backend.name)
        problems = backend.check(env)
        if problems:
            raise BackendNotReady(f"{backend.name}: {problems[0].message}", problems[0].fix)
        return env
    registered = load_registry().get(backend.name)
    if registered is not None:
        return resolve_runtime(registered)
    guess = BackendEnv(backend.name, Path("python"), versions={"cuda": "yes" if nvidia_gpu_present() else "no"})
    return resolve_runtime(guess)
