"""`loraforge train PHOTOS --trigger "ohwx person" --base-model M --subject face`: no job file, no config.

photos --prep--> dataset --caption (trigger first)--> subject x family preset --step plan--> train --> LoRA.
Flags and --set still override the preset; the prepared dataset lives beside the run folders and is reused
(prep and captions are cached) when the same photos are trained again.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

from orchestrator.commands.common import flag_layer
from orchestrator.errors import LoraforgeError
from orchestrator.job import build_job, merge_layers


def run_oneshot(args: argparse.Namespace) -> int:
    from orchestrator.basemodel import infer_family
    from orchestrator.display import console
    from orchestrator.presets import load_preset_layer, preset_for

    con = console()
    photos = Path(args.job).expanduser().resolve()
    if not args.base_model:
        raise LoraforgeError(
            "one-shot training needs --base-model", "e.g. --base-model stabilityai/stable-diffusion-xl-base-1.0"
        )
    subject = args.subject or "face"
    if not args.trigger and subject != "style":
        raise LoraforgeError(f"a {subject} LoRA needs a trigger token", 'e.g. --trigger "ohwx person"')
    family = args.family or infer_family(args.base_model)
    if family is None:
        raise LoraforgeError(f"cannot tell the model family of {args.base_model}", "pass --family sd15|sdxl|flux")
    flags = flag_layer(args)
    preset_layer = load_preset_layer(args.preset or preset_for(subject, family))
    resolution = flags.get("training", {}).get("resolution") or preset_layer.get("training", {}).get("resolution", 1024)

    runs_root = Path(args.output_dir).resolve() if args.output_dir else Path("runs").resolve()
    key = hashlib.sha1(f"{photos}|{subject}|{resolution}|{args.crop}".encode()).hexdigest()[:10]
    dataset = runs_root / "datasets" / f"{photos.stem}-{key}"

    from orchestrator.dataset.prep import prepare_dataset

    con.print(f"preparing {photos} -> {dataset}")
    prepared = prepare_dataset(photos, dataset, subject=subject, size=resolution, crop=args.crop or "auto")
    for line in prepared.advice:
        con.print(f"advice: {line}")
    if prepared.accepted == 0:
        raise LoraforgeError(f"no usable photos in {photos}", f"see the report: {prepared.report_path}")

    from orchestrator.captions import caption_dataset

    captioner = args.captioner or "florence2"
    con.print(f"captioning with {captioner}")
    caption_dataset(dataset, captioner=captioner, trigger=args.trigger)

    name = args.name or re.sub(r"[^A-Za-z0-9._-]+", "_", photos.stem).strip("._-") or "lora"
    base = {
        "name": name,
        "dataset": str(dataset),
        "subject": subject,
        "family": family,
        "output": {"dir": str(runs_root)},
    }
    data = merge_layers(base, preset_layer, flags)
    data["dataset"] = str(dataset)
    job = build_job(data, "one-shot flags")

    from orchestrator.commands.train import train_and_report

    return train_and_report(job, args.backend or "kohya", json_mode=args.json, quiet=args.quiet)
