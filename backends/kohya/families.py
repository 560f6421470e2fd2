"""The model families sd-scripts trains, read from families.toml: each family's script, LoRA module, the files its
model comes in (parts.py resolves them), and the options the family needs (:func:`family_options`). What sd-scripts
cannot train is in ``REFUSED`` with the reason."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orchestrator.errors import LoraforgeError
from orchestrator.job import JobSpec


@dataclass(frozen=True)
class Part:
    """One file sd-scripts loads beside the model: its option, what it is, the names it goes by (globs, first
    preferred), the key prefix under which a checkpoint may hold it, and where people download it."""

    option: str
    what: str
    files: tuple[str, ...]
    get: str
    inside: str | None = None


@dataclass(frozen=True)
class Family:
    name: str
    script: str
    network_module: str
    lora_only: bool = False
    tokenizers: dict[str, str] = field(default_factory=dict)  # diffusers subfolder -> tokenizer cache entry
    checkpoint: Part | None = None  # None: sd-scripts takes the base model as it is (sd15, sdxl)
    parts: tuple[Part, ...] = ()
    cache_folder: str = ""  # the tokenizer cache folder beside a checkpoint
    cache_entries: tuple[str, ...] = ()  # what sd-scripts looks for in it
    options: dict[str, Any] = field(default_factory=dict)
    token_length: tuple[str, int] | None = None
    cache_text_encoder_outputs: bool = False
    unet_only: str = ""
    bf16_on_cpu: str = ""
    sample_args: str = ""

    @property
    def single_file(self) -> bool:
        """sd-scripts loads this family from single files (a checkpoint and its parts), never a diffusers folder."""
        return self.checkpoint is not None


def _part(option: str, data: dict[str, Any]) -> Part:
    return Part(option, data["what"], tuple(data["files"]), data["get"], data.get("inside"))


@cache
def _table() -> dict[str, Any]:
    return tomllib.loads(Path(__file__).with_name("families.toml").read_text(encoding="utf-8"))


@cache
def families() -> dict[str, Family]:
    out = {}
    for name, data in _table().items():
        if name == "refused":
            continue
        cache_spec = data.get("tokenizer_cache", {})
        length = data.get("token_length")
        out[name] = Family(
            name=name,
            script=data["script"],
            network_module=data["network_module"],
            lora_only=data.get("lora_only", False),
            tokenizers=dict(data.get("tokenizers", {})),
            checkpoint=_part("pretrained_model_name_or_path", data["checkpoint"]) if "checkpoint" in data else None,
            parts=tuple(_part(option, part) for option, part in data.get("parts", {}).items()),
            cache_folder=cache_spec.get("folder", ""),
            cache_entries=tuple(cache_spec.get("entries", ())),
            options=dict(data.get("options", {})),
            token_length=(length["option"], length["default"]) if length else None,
            cache_text_encoder_outputs=data.get("cache_text_encoder_outputs", False),
            unet_only=data.get("unet_only", ""),
            bf16_on_cpu=data.get("bf16_on_cpu", ""),
            sample_args=data.get("sample_args", ""),
        )
    return out


REFUSED: Mapping[str, str] = MappingProxyType(dict(_table()["refused"]))
SCRIPTS: dict[str, str] = {name: family.script for name, family in families().items()}


def family(name: str | None) -> Family:
    """The family a job trains (sd15 when a caller has none yet), or the reason sd-scripts cannot train it."""
    name = name or "sd15"
    if name in families():
        return families()[name]
    raise LoraforgeError(
        f"sd-scripts cannot train family {name!r}: {REFUSED.get(name, 'not one of its families')}",
        f"use --backend simpletuner, or one of: {', '.join(sorted(families()))}",
    )


def family_options(job: JobSpec, options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``options`` (the job's own settings in sd-scripts' terms) with what the job's family adds: its required and
    recommended options, the token length and text-encoder output caching (nothing about the machine: the CPU's
    precision is options.py's); and notes on what the job asked for that the family changes."""
    spec = family(job.family)
    out = {**options, **spec.options}
    notes: list[str] = []
    if spec.unet_only:
        out["network_train_unet_only"] = True
        if out.pop("text_encoder_lr", None):
            notes.append(f"training.text_encoder_lr: no text encoder is trained for {spec.name} ({spec.unet_only})")
    if spec.token_length is not None:
        out[spec.token_length[0]] = spec.token_length[1]
    if spec.cache_text_encoder_outputs and out.get("network_train_unet_only"):
        if job.training.shuffle_captions:
            # sd-scripts refuses to cache the outputs of captions that change every step
            notes.append(
                "training.shuffle_captions: the text encoders run at every step (their outputs cannot be cached "
                "for captions that change), which is slower and keeps them in memory"
            )
        else:
            out["cache_text_encoder_outputs"] = True
    return out, notes


def check_network(job: JobSpec) -> None:
    """The family's own LoRA module trains plain LoRA only: another network type is refused before anything runs."""
    spec = family(job.family)
    if spec.lora_only and job.network.type != "lora":
        raise LoraforgeError(
            f"network.type={job.network.type}: sd-scripts trains {spec.name} with its own LoRA module "
            f"({spec.network_module}), plain LoRA only",
            "set network.type: lora",
        )
