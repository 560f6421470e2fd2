"""Import a Kohya GUI JSON preset as a loraforge preset layer; every key of the file is reported exactly once.

Rules per key come from ``kohya_gui_keys.tsv``; the ``special`` ones are the functions below. A key (or an argument
inside ``additional_parameters``) whose name says key, token, password or secret is dropped and reported by name.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.kohya.options import sd_scripts_options
from orchestrator.errors import LoraforgeError
from orchestrator.presets.kohya_values import (
    SECRET,
    Entry,
    Importer,
    ImportReport,
    convert,
    lora_types,
    put,
    rules,
    scalar,
    to_bool,
    typed_option,
)
from orchestrator.secrets import is_secret


@dataclass(frozen=True)
class Preset:
    """What several rules read from the whole preset."""

    data: dict[str, Any]
    lora_type: str
    network_type: str | None  # None: a LoRA_type loraforge does not train
    noise_type: str  # noise_offset_type: which noise keys apply
    steps: int | None  # max_train_steps, when set: it decides the length


def import_kohya_gui(data: dict[str, Any], source: str = "preset") -> ImportReport:
    imp = Importer(source, "kohya-gui")
    table = rules("kohya_gui_keys.tsv")
    lora_type = str(data.get("LoRA_type", "Standard"))
    preset = Preset(
        data=data,
        lora_type=lora_type,
        network_type=lora_types().get(lora_type),
        noise_type=str(data.get("noise_offset_type", "Original")),
        steps=_steps_set(data.get("max_train_steps"), source),
    )

    def rule(key: str, value: Any) -> None:
        action, target, note = table.get(key, ("", "", ""))
        if action == "ignore":
            imp.ignore(key, note)
        elif action == "field":
            path, _, kind = target.partition(":")
            converted = convert(kind, value)
            if converted is None:
                imp.ignore(key, f"not set ({value!r}): {note or 'the default applies'}")
            else:
                imp.map(key, path, converted)
        elif action in ("netarg", "lycoris"):
            _network_arg(imp, key, value, target, action, preset)
        elif action == "kohya":
            option, _, kind = target.partition(":")
            converted = convert(kind, value)
            if converted in (None, False):
                imp.ignore(key, f"not set ({value!r}): sd-scripts' default applies")
            else:
                imp.kohya(key, option, converted)
        elif action == "special":
            SPECIAL[target](imp, key, value, preset)
        elif key in sd_scripts_options():
            _passed_through(imp, key, value)
        else:
            imp.ignore(key, "GUI-only: not an sd-scripts option")

    return imp.each(data, rule)


def _steps_set(value: Any, source: str) -> int | None:
    try:
        return convert("int_or_unset", value)
    except (ValueError, TypeError) as exc:
        raise LoraforgeError(f"{source}: max_train_steps cannot be read ({exc})", "give a number of steps") from None


def _network_arg(imp: Importer, key: str, value: Any, target: str, action: str, preset: Preset) -> None:
    name, _, kind = target.partition(":")
    converted = convert(kind, value)
    if action == "lycoris" and preset.network_type in (None, "lora"):
        imp.ignore(key, f"only used by LyCORIS/LoCon types, not LoRA_type {preset.lora_type!r}")
    elif converted is None or converted is False or (not isinstance(converted, str) and converted <= 0):
        imp.ignore(key, f"not set ({value!r}): the network's default applies")
    else:
        imp.map(key, f"network.args.{name}", converted)


def _passed_through(imp: Importer, key: str, value: Any) -> None:
    """A key the table does not list but sd-scripts has: passed on when it is set to something but the default."""
    typed = typed_option(key, value)
    default = sd_scripts_options()[key][1]
    if typed is None or typed is False or typed == default or (typed == 0 and key != "max_data_loader_n_workers"):
        imp.ignore(key, f"not set ({value!r}): sd-scripts' default applies")
    else:
        imp.kohya(key, key, typed)


# --- the special rules, by the name kohya_gui_keys.tsv gives them -----------------------------------------------


def _lora_type(imp: Importer, key: str, value: Any, preset: Preset) -> None:
    if preset.network_type is None:
        imp.ignore(key, f"unsupported LoRA_type {value!r}: trained as plain LoRA unless network.type is set")
    else:
        imp.map(key, "network.type", preset.network_type)


def _unet_lr(imp: Importer, key: str, value: Any, preset: Preset) -> None:
    lr = convert("float_or_unset", value)
    if lr is None:
        imp.ignore(key, "not set: learning_rate applies to the UNet")
    else:
        imp.map(key, "training.learning_rate", lr, "sd-scripts uses unet_lr over learning_rate for the UNet")


def _steps(imp: Importer, key: str, value: Any, preset: Preset) -> None:
    if preset.steps is None:
        imp.ignore(key, f"not set ({value!r}): the length comes from epoch")
    else:
        imp.map(key, "training.steps", preset.steps)


def _epochs(imp: Importer, key: str, value: Any, preset: Preset) -> None:
    epochs = convert("int_or_unset", value)
    max_epochs = convert("int_or_unset", preset.data.get("max_train_epochs"))
    if preset.steps is not None:
        imp.ignore(key, "max_train_steps decides the length")
    elif max_epochs is not None:
        imp.ignore(key, "max_train_epochs decides the length")
    elif epochs is None:
        imp.ignore(key, "not set")
    else:
        imp.map(key, "training.epochs", epochs)


def _max_epochs(imp: Importer, key: str, value: Any, preset: Preset) -> None:
    epochs = convert("int_or_unset", value)
    if epochs is None:
        imp.ignore(key, f"not set ({value!r})")
    elif preset.steps is not None:
        imp.ignore(key, "max_train_steps decides the length")
    else:
        imp.map(key, "training.epochs", epochs)


def _warmup_percent(imp: Importer, key: str, value: Any, preset: Preset) -> None:
    percent = convert("float_or_unset", value)
    if percent is None:
        imp.ignore(key, f"not set ({value!r}): no warmup")
    elif preset.steps is None:
        imp.map(key, "backend_args.kohya.lr_warmup_steps", percent / 100, "a fraction of the steps")
    else:
        steps = preset.steps
        imp.map(key, "training.warmup_steps", round(steps * percent / 100), f"{percent:g}% of {steps} steps")


def _noise_offset(imp: Importer, key: str, value: Any, preset: Preset) -> None:
    offset = convert("float_or_unset", value)
    if preset.noise_type != "Original":
        imp.ignore(key, f"noise_offset_type is {preset.noise_type!r}")
    elif offset is None:
        imp.ignore(key, "not set: no noise offset")
    else:
        imp.map(key, "training.noise_offset", offset)


def _noise_offset_type(imp: Importer, key: str, value: Any, preset: Preset) -> None:
    imp.ignore(key, f"GUI-only: selects which noise keys apply ({value!r})")


def _noise(wanted: str) -> Callable[[Importer, str, Any, Preset], None]:
    def rule(imp: Importer, key: str, value: Any, preset: Preset) -> None:
        number = convert("float_or_unset", value)
        if preset.noise_type != wanted:
            imp.ignore(key, f"only used when noise_offset_type is {wanted!r}")
        elif number is None:
            imp.ignore(key, "not set")
        else:
            imp.kohya(key, key, int(number) if key == "multires_noise_iterations" else number)

    return rule


def _attention(imp: Importer, key: str, value: Any, preset: Preset) -> None:
    text = str(value).strip().lower()
    if value is True or text in ("xformers", "true"):
        imp.kohya(key, "xformers", True)
    elif text == "sdpa":
        imp.kohya(key, "sdpa", True)
    else:
        imp.ignore(key, f"{value!r}: sd-scripts' default attention")


def _additional(imp: Importer, key: str, value: Any, preset: Preset) -> None:
    """``--name value`` arguments: an option loraforge models (e.g. --lr_warmup_steps) goes to its field, the rest
    to backend_args.kohya; a secret is named and dropped."""
    try:
        args = parse_cli_args(str(value or ""))
    except ValueError as exc:  # an unclosed quote; the text itself is not quoted: it may hold a secret
        raise LoraforgeError(
            f"{imp.report.source}: {key} cannot be split into --name value arguments ({exc})",
            "close the quote in the preset's additional parameters, or delete the key",
        ) from None
    if not args:
        imp.ignore(key, "empty")
        return
    sd_rules = rules("sd_scripts_keys.tsv")
    targets, secrets = [], []
    for option, option_value in args.items():
        action, target, _ = sd_rules.get(option, ("", "", ""))
        if is_secret(option):
            secrets.append(f"--{option}")
        elif action == "field":
            path, _, kind = target.partition(":")
            put(imp.report.layer, path, convert(kind, option_value))
            targets.append(path)
        else:
            put(imp.report.layer, f"backend_args.kohya.{option}", option_value)
            targets.append(f"backend_args.kohya.{option}")
    detail = ", ".join(sorted(targets))
    if secrets:
        detail = "; ".join(filter(None, [detail, f"{', '.join(secrets)}: {SECRET}"]))
    imp.report.entries.append(Entry(key, "mapped" if targets else "ignored", detail))


def _family_sdxl(imp: Importer, key: str, value: Any, preset: Preset) -> None:
    if to_bool(value):
        imp.map(key, "family", "sdxl")
    elif to_bool(preset.data.get("flux1_checkbox")) or to_bool(preset.data.get("v2")):
        imp.ignore(key, "false: not an SDXL preset")
    else:
        imp.map(key, "family", "sd15", "neither SDXL, Flux nor SD 2.x")


def _family_flux(imp: Importer, key: str, value: Any, preset: Preset) -> None:
    if to_bool(value):
        imp.map(key, "family", "flux")
    else:
        imp.ignore(key, "false: not a Flux preset")


def _v2(imp: Importer, key: str, value: Any, preset: Preset) -> None:
    if to_bool(value):
        imp.ignore(key, "unsupported: SD 2.x is not a loraforge family")
    else:
        imp.ignore(key, "false: not SD 2.x")


SPECIAL: dict[str, Callable[[Importer, str, Any, Preset], None]] = {
    "lora_type": _lora_type,
    "unet_lr": _unet_lr,
    "steps": _steps,
    "epochs": _epochs,
    "max_epochs": _max_epochs,
    "optimizer": lambda imp, key, value, preset: imp.optimizer(key, value),
    "scheduler": lambda imp, key, value, preset: imp.scheduler(key, value),
    "warmup_percent": _warmup_percent,
    "noise_offset": _noise_offset,
    "noise_offset_type": _noise_offset_type,
    "original_noise": _noise("Original"),
    "multires_noise": _noise("Multires"),
    "attention": _attention,
    "additional": _additional,
    "family_sdxl": _family_sdxl,
    "family_flux": _family_flux,
    "v2": _v2,
}


def parse_cli_args(text: str) -> dict[str, Any]:
    """``--max_grad_norm=0 --network_train_unet_only --log_prefix xl`` -> {option: value}."""
    result: dict[str, Any] = {}
    tokens = shlex.split(text)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            i += 1
            continue
        name, eq, inline = token[2:].partition("=")
        if eq:
            result[name] = scalar(inline)
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            result[name] = scalar(tokens[i + 1])
            i += 1
        else:
            result[name] = True
        i += 1
    return result
