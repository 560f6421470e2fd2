"""`loraforge train PHOTOS --trigger "ohwx person" --base-model M --subject face`: no job file, no config.

photos --prep--> dataset --caption (trigger first)--> subject x family preset --> a JobSpec, which the train command
then runs like any other (the step plan is made there, from the prepared dataset). Flags and --set still override
the preset; the prepared dataset lives beside the run folders and is reused when the same photos are trained again
(prep caches its work in loraforge's cache folder).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from orchestrator.errors import LoraforgeError
from orchestrator.job import Family, JobSpec, build_job, merge_layers
from orchestrator.userpath import user_path


@dataclass(frozen=True)
class OneShot:
    photos: Path  # a folder or a .zip
    base_model: str | None
    trigger: str | None
    subject: str = "face"
    family: str | None = None
    preset: str | None = None
    captioner: str = "florence2"
    crop: str = "auto"
    name: str | None = None
    runs_root: Path = Path("runs")
    flags: dict[str, Any] = field(default_factory=dict)  # the command line's job layer (flags and --set)


def prepare_oneshot(spec: OneShot, console: Any) -> JobSpec:
    """Prep and caption the photos, pick the preset; the job that trains them."""
    from orchestrator.basemodel import infer_family
    from orchestrator.presets import load_preset_layer, preset_for

    photos = user_path(spec.photos).resolve()
    if not spec.base_model:
        raise LoraforgeError(
            "one-shot training needs --base-model", "e.g. --base-model stabilityai/stable-diffusion-xl-base-1.0"
        )
    if not spec.trigger and spec.subject != "style":
        raise LoraforgeError(f"a {spec.subject} LoRA needs a trigger token", 'e.g. --trigger "ohwx person"')
    family = spec.family or infer_family(spec.base_model)
    if family is None:
        raise LoraforgeError(f"cannot tell the model family of {spec.base_model}", f"pass --family ({', '.join(get_args(Family))})")
    preset_layer = load_preset_layer(spec.preset or preset_for(spec.subject, family))
    resolution = spec.flags.get("training", {}).get("resolution") or preset_layer.get("training", {}).get(
        "resolution", 1024
    )
    runs_root = user_path(spec.runs_root).resolve()
    key = hashlib.sha1(f"{photos}|{spec.subject}|{resolution}|{spec.crop}".encode()).hexdigest()[:10]
    dataset = runs_root / "datasets" / f"{photos.stem}-{key}"

    from orchestrator.dataset.prep import prepare_dataset

    console.print(f"preparing {photos} -> {dataset}")
    prepared = prepare_dataset(photos, dataset, subject=spec.subject, size=resolution, crop=spec.crop)
    for line in prepared.advice:
        console.print(f"advice: {line}")
    if prepared.accepted == 0:
        raise LoraforgeError(f"no usable photos in {photos}", f"see the report: {prepared.report_path}")

    from orchestrator.captions import caption_dataset

    console.print(f"captioning with {spec.captioner}")
    caption_dataset(dataset, captioner=spec.captioner, trigger=spec.trigger)

    name = spec.name or re.sub(r"[^A-Za-z0-9._-]+", "_", photos.stem).strip("._-") or "lora"
    base = {"name": name, "subject": spec.subject, "family": family, "output": {"dir": str(runs_root)}}
    data = merge_layers(base, preset_layer, spec.flags)
    data["dataset"] = str(dataset)
    return build_job(data, "one-shot flags")
