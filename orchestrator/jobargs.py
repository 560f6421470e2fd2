"""The flags shared by the commands that build a JobSpec (train, render, compare, submit), and the job they make."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from orchestrator.family import Family

if TYPE_CHECKING:  # the job model (pydantic) loads when a job is built, not for the flags: a command starts fast
    from orchestrator.job import JobSpec


def add_job_arguments(parser: argparse.ArgumentParser, *, job_required: bool = False) -> None:
    from backends.base import names

    parser.add_argument("job", nargs=None if job_required else "?", help="job file (YAML)")
    parser.add_argument("--backend", "-b", choices=names(), default=None, help="training backend (default: kohya)")
    parser.add_argument("--preset", help="built-in preset name or a preset / Kohya GUI JSON / sd-scripts TOML file")
    parser.add_argument("--name", help="job name")
    parser.add_argument("--base-model", help="local file or folder, or a hub id")
    parser.add_argument("--family", choices=get_args(Family), help="model family (default: read from the model)")
    parser.add_argument("--subject", choices=["face", "object", "style"])
    parser.add_argument("--trigger", help='trigger token, e.g. "ohwx person"')
    parser.add_argument(
        "--add-trigger",
        action="store_true",
        default=None,
        help="captions without the trigger get it in front, in the run's copy only (else such a run is refused)",
    )
    parser.add_argument("--dataset", help="folder of images with .txt captions")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--rank", type=int)
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--gpus", type=int, help="processes (GPUs) per node")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--output-dir", help="folder for run folders (default: runs)")
    parser.add_argument("--format", choices=["kohya", "diffusers"], help="key layout of the final LoRA")
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any JobSpec field, e.g. --set training.optimizer=prodigy (repeatable)",
    )


def flag_layer(args: argparse.Namespace) -> dict[str, Any]:
    """The CLI flags as a JobSpec layer (only what was given)."""
    layer: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        if value is None:
            return
        node = layer
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    put("name", args.name)
    put("base_model", args.base_model)
    put("family", args.family)
    put("subject", args.subject)
    put("trigger", args.trigger)
    put("add_trigger", args.add_trigger)
    put("dataset", str(Path(args.dataset).resolve()) if args.dataset else None)
    put("training.steps", args.steps)
    put("network.rank", args.rank)
    put("training.learning_rate", args.lr)
    put("training.resolution", args.resolution)
    put("training.batch_size", args.batch_size)
    put("distributed.gpus", args.gpus)
    put("distributed.nodes", args.nodes)
    put("output.dir", str(Path(args.output_dir).resolve()) if args.output_dir else None)
    put("saving.format", args.format)
    if args.steps is not None:
        layer.setdefault("training", {})["steps"] = args.steps
    from orchestrator.job import merge_layers, parse_assignment

    merged = layer
    for text in args.assignments:
        merged = merge_layers(merged, parse_assignment(text))
    return merged


def job_layers(args: argparse.Namespace) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    """The named layers, lowest first: preset, job file, flags. Also returns the job file's path."""
    from orchestrator.job import load_yaml_layer

    layers: list[tuple[str, dict[str, Any]]] = []
    job_file = getattr(args, "job", None)
    file_layer = load_yaml_layer(Path(job_file)) if job_file else {}
    preset = args.preset or file_layer.pop("preset", None)
    if preset:
        from orchestrator.presets import load_preset_layer

        layers.append((f"preset {preset}", load_preset_layer(preset)))
    if job_file:
        layers.append((f"job file {job_file}", file_layer))
    layers.append(("flag", flag_layer(args)))
    return layers, job_file


def resolve_job(args: argparse.Namespace) -> JobSpec:
    from orchestrator.job import build_job, merge_layers

    layers, job_file = job_layers(args)
    data = merge_layers(*(layer for _, layer in layers))
    return build_job(data, job_file or "command-line flags")
