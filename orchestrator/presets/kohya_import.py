"""Import Kohya GUI JSON presets and sd-scripts ``--config_file`` TOML files as loraforge preset layers.

Every key of the file ends up in the report exactly once: mapped (to which setting) or ignored (and why). The
per-key rules are data (``kohya_gui_keys.tsv``, ``sd_scripts_keys.tsv``); this module applies them.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from orchestrator.errors import LoraforgeError

HERE = Path(__file__).resolve().parent

OPTIMIZERS = {
    "adamw": "adamw",
    "adamw8bit": "adamw8bit",
    "adafactor": "adafactor",
    "prodigy": "prodigy",
    "lion": "lion",
    "sgdnesterov": "sgd",
    "sgd": "sgd",
    "dadaptadam": "dadaptadam",
}
SCHEDULERS = {"constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"}
LORA_TYPES = {
    "Standard": "lora",
    "Flux1": "lora",
    "Kohya LoCon": "locon",
    "LoCon": "locon",
    "LyCORIS/LoCon": "locon",
    "LyCORIS/LoHa": "loha",
    "LyCORIS/LoKr": "lokr",
    "LyCORIS/iA3": "ia3",
    "LyCORIS/DyLoRA": "dylora",
    "Kohya DyLoRA": "dylora",
    "LyCORIS/GLoRA": "glora",
    "LyCORIS/BOFT": "boft",
    "LyCORIS/Diag-OFT": "diag-oft",
}
# sd-scripts network modules and the LyCORIS algo names behind each loraforge network type.
LYCORIS_ALGOS = {
    "locon": "locon",
    "loha": "loha",
    "lokr": "lokr",
    "ia3": "ia3",
    "dylora": "dylora",
    "glora": "glora",
    "boft": "boft",
    "diag-oft": "diag-oft",
}


@dataclass(frozen=True)
class Entry:
    key: str
    status: str  # "mapped" | "ignored"
    detail: str


@dataclass
class ImportReport:
    source: str
    kind: str  # "kohya-gui" | "sd-scripts"
    layer: dict[str, Any]
    entries: list[Entry] = field(default_factory=list)

    def mapped(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "mapped"]

    def ignored(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "ignored"]

    def text(self) -> str:
        lines = [f"imported {self.source} ({self.kind}): {len(self.mapped())} mapped, {len(self.ignored())} ignored"]
        for entry in sorted(self.entries, key=lambda e: (e.status, e.key.lower())):
            lines.append(f"  {entry.status:<7} {entry.key}: {entry.detail}")
        return "\n".join(lines) + "\n"


# --- the rule tables ------------------------------------------------------------------------------------------


@cache
def _rules(name: str) -> dict[str, tuple[str, str, str]]:
    rules: dict[str, tuple[str, str, str]] = {}
    for line in (HERE / name).read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#") or line.startswith("key\t"):
            continue
        parts = (line.split("\t") + ["", "", ""])[:4]
        rules[parts[0]] = (parts[1], parts[2], parts[3])
    return rules


@cache
def sd_scripts_options() -> dict[str, tuple[str, Any]]:
    """sd-scripts option name -> (type, default)."""
    options: dict[str, tuple[str, Any]] = {}
    for line in (HERE / "sd_scripts_options.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind, default = line.split("\t")
            options[name] = (kind, json.loads(default))
    return options


def typed_option(name: str, value: Any) -> Any:
    """A GUI value typed like sd-scripts' option ("75" -> 75 for an int option); None if empty."""
    kind, _ = sd_scripts_options()[name]
    if _empty(value):
        return None
    try:
        if kind == "int":
            return int(_to_number(value))
        if kind == "float":
            return _to_number(value)
        if kind == "bool":
            return _to_bool(value)
        if kind == "list":
            return convert("list", value)
    except ValueError:
        return value
    return value


# --- value coercion -------------------------------------------------------------------------------------------


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _to_number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    return float(str(value).strip())


def convert(kind: str, value: Any) -> Any:
    """Coerce one GUI value by rule name; None means "not set" (empty, or 0 where 0 means off)."""
    if kind in ("int", "float", "int_or_unset", "float_or_unset") and _empty(value):
        return None
    if kind == "int":
        return int(_to_number(value))
    if kind == "float":
        return _to_number(value)
    if kind == "int_or_unset":
        number = int(_to_number(value))
        return number or None
    if kind == "float_or_unset":
        number = _to_number(value)
        return number or None
    if kind == "bool":
        return _to_bool(value)
    if kind in ("str", "str_or_unset"):
        return None if _empty(value) else str(value)
    if kind == "list":
        if isinstance(value, list):
            return [str(v) for v in value] or None
        return shlex.split(str(value)) or None
    if kind == "resolution":
        if isinstance(value, (int, float)):
            side = int(value)
        elif isinstance(value, (list, tuple)):
            side = max(int(v) for v in value)
        else:
            side = max(int(v) for v in str(value).replace("x", ",").split(",") if v.strip())
        return max(64, round(side / 64) * 64)
    if kind == "precision":
        text = str(value).strip().lower()
        return {"no": "fp32", "fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}.get(text)
    raise ValueError(f"unknown conversion {kind}")


def _put(layer: dict[str, Any], path: str, value: Any) -> None:
    node = layer
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


# --- Kohya GUI JSON -------------------------------------------------------------------------------------------


class _Importer:
    def __init__(self, source: str, kind: str) -> None:
        self.report = ImportReport(source, kind, {})

    def map(self, key: str, path: str, value: Any, why: str = "") -> None:
        _put(self.report.layer, path, value)
        self.report.entries.append(Entry(key, "mapped", f"{path} = {value!r}" + (f" ({why})" if why else "")))

    def ignore(self, key: str, reason: str) -> None:
        self.report.entries.append(Entry(key, "ignored", reason))

    def kohya(self, key: str, option: str, value: Any) -> None:
        self.map(key, f"backend_args.kohya.{option}", value, "sd-scripts option")


def import_kohya_gui(data: dict[str, Any], source: str = "preset") -> ImportReport:
    imp = _Importer(source, "kohya-gui")
    rules = _rules("kohya_gui_keys.tsv")
    lora_type = str(data.get("LoRA_type", "Standard"))
    network_type = LORA_TYPES.get(lora_type)
    noise_type = str(data.get("noise_offset_type", "Original"))
    steps = convert("int_or_unset", data.get("max_train_steps"))
    for key in sorted(data, key=str.lower):
        value = data[key]
        action, target, note = rules.get(key, ("", "", ""))
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
            name, _, kind = target.partition(":")
            converted = convert(kind, value)
            if action == "lycoris" and network_type in (None, "lora"):
                imp.ignore(key, f"only used by LyCORIS/LoCon types, not LoRA_type {lora_type!r}")
            elif converted is None or converted is False or (not isinstance(converted, str) and converted <= 0):
                imp.ignore(key, f"not set ({value!r}): the network's default applies")
            else:
                imp.map(key, f"network.args.{name}", converted)
        elif action == "kohya":
            option, _, kind = target.partition(":")
            converted = convert(kind, value)
            if converted in (None, False):
                imp.ignore(key, f"not set ({value!r}): sd-scripts' default applies")
            else:
                imp.kohya(key, option, converted)
        elif action == "special":
            _special(imp, target, key, value, data, network_type, lora_type, noise_type, steps)
        elif key in sd_scripts_options():
            typed = typed_option(key, value)
            default = sd_scripts_options()[key][1]
            if (
                typed is None
                or typed is False
                or typed == default
                or (typed == 0 and key != "max_data_loader_n_workers")
            ):
                imp.ignore(key, f"not set ({value!r}): sd-scripts' default applies")
            else:
                imp.kohya(key, key, typed)
        else:
            imp.ignore(key, "GUI-only: not an sd-scripts option")
    return imp.report


def _special(  # noqa: C901 - one small rule per branch, read top to bottom
    imp: _Importer,
    rule: str,
    key: str,
    value: Any,
    data: dict[str, Any],
    network_type: str | None,
    lora_type: str,
    noise_type: str,
    steps: int | None,
) -> None:
    if rule == "lora_type":
        if network_type is None:
            imp.ignore(key, f"unsupported LoRA_type {value!r}: trained as plain LoRA unless network.type is set")
        else:
            imp.map(key, "network.type", network_type)
    elif rule == "unet_lr":
        lr = convert("float_or_unset", value)
        if lr is None:
            imp.ignore(key, "not set: learning_rate applies to the UNet")
        else:
            imp.map(key, "training.learning_rate", lr, "sd-scripts uses unet_lr over learning_rate for the UNet")
    elif rule == "steps":
        if steps is None:
            imp.ignore(key, f"not set ({value!r}): the length comes from epoch")
        else:
            imp.map(key, "training.steps", steps)
    elif rule == "epochs":
        epochs = convert("int_or_unset", value)
        max_epochs = convert("int_or_unset", data.get("max_train_epochs"))
        if steps is not None:
            imp.ignore(key, "max_train_steps decides the length")
        elif max_epochs is not None:
            imp.ignore(key, "max_train_epochs decides the length")
        elif epochs is None:
            imp.ignore(key, "not set")
        else:
            imp.map(key, "training.epochs", epochs)
    elif rule == "max_epochs":
        epochs = convert("int_or_unset", value)
        if epochs is None:
            imp.ignore(key, f"not set ({value!r})")
        elif steps is not None:
            imp.ignore(key, "max_train_steps decides the length")
        else:
            imp.map(key, "training.epochs", epochs)
    elif rule == "optimizer":
        name = OPTIMIZERS.get(str(value).strip().lower())
        if name:
            imp.map(key, "training.optimizer", name)
        else:
            imp.kohya(key, "optimizer_type", str(value))
    elif rule == "scheduler":
        name = str(value).strip()
        if name in SCHEDULERS:
            imp.map(key, "training.scheduler", name)
        else:
            imp.kohya(key, "lr_scheduler", name)
    elif rule == "warmup_percent":
        percent = convert("float_or_unset", value)
        if percent is None:
            imp.ignore(key, f"not set ({value!r}): no warmup")
        elif steps is None:
            imp.map(key, "backend_args.kohya.lr_warmup_steps", percent / 100, "a fraction of the steps")
        else:
            imp.map(key, "training.warmup_steps", round(steps * percent / 100), f"{percent:g}% of {steps} steps")
    elif rule == "noise_offset":
        offset = convert("float_or_unset", value)
        if noise_type != "Original":
            imp.ignore(key, f"noise_offset_type is {noise_type!r}")
        elif offset is None:
            imp.ignore(key, "not set: no noise offset")
        else:
            imp.map(key, "training.noise_offset", offset)
    elif rule == "noise_offset_type":
        imp.ignore(key, f"GUI-only: selects which noise keys apply ({value!r})")
    elif rule in ("original_noise", "multires_noise"):
        wanted = "Original" if rule == "original_noise" else "Multires"
        number = convert("float_or_unset", value)
        if noise_type != wanted:
            imp.ignore(key, f"only used when noise_offset_type is {wanted!r}")
        elif number is None:
            imp.ignore(key, "not set")
        else:
            imp.kohya(key, key, int(number) if key == "multires_noise_iterations" else number)
    elif rule == "attention":
        text = str(value).strip().lower()
        if value is True or text == "xformers" or text == "true":
            imp.kohya(key, "xformers", True)
        elif text == "sdpa":
            imp.kohya(key, "sdpa", True)
        else:
            imp.ignore(key, f"{value!r}: sd-scripts' default attention")
    elif rule == "additional":
        args = _parse_cli_args(str(value or ""))
        if not args:
            imp.ignore(key, "empty")
        else:
            targets = []
            sd_rules = _rules("sd_scripts_keys.tsv")
            for option, option_value in args.items():
                action, target, _ = sd_rules.get(option, ("", "", ""))
                if action == "field":  # an option loraforge models (e.g. --lr_warmup_steps) goes to its field
                    path, _, kind = target.partition(":")
                    _put(imp.report.layer, path, convert(kind, option_value))
                    targets.append(path)
                else:
                    _put(imp.report.layer, f"backend_args.kohya.{option}", option_value)
                    targets.append(f"backend_args.kohya.{option}")
            imp.report.entries.append(Entry(key, "mapped", ", ".join(sorted(targets))))
    elif rule == "family_sdxl":
        if _to_bool(value):
            imp.map(key, "family", "sdxl")
        elif _to_bool(data.get("flux1_checkbox")) or _to_bool(data.get("v2")):
            imp.ignore(key, "false: not an SDXL preset")
        else:
            imp.map(key, "family", "sd15", "neither SDXL, Flux nor SD 2.x")
    elif rule == "family_flux":
        if _to_bool(value):
            imp.map(key, "family", "flux")
        else:
            imp.ignore(key, "false: not a Flux preset")
    elif rule == "v2":
        if _to_bool(value):
            imp.ignore(key, "unsupported: SD 2.x is not a loraforge family")
        else:
            imp.ignore(key, "false: not SD 2.x")
    else:  # pragma: no cover - a rule named in the TSV without code is a bug caught by the preset tests
        raise ValueError(f"no rule {rule!r}")


def _parse_cli_args(text: str) -> dict[str, Any]:
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
            result[name] = _scalar(inline)
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            result[name] = _scalar(tokens[i + 1])
            i += 1
        else:
            result[name] = True
        i += 1
    return result


def _scalar(text: str) -> Any:
    from orchestrator.job import parse_scalar

    return parse_scalar(text)


# --- sd-scripts TOML ------------------------------------------------------------------------------------------


def is_dataset_config(data: dict[str, Any]) -> bool:
    return "datasets" in data


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts reads any [section] of a --config_file as flat argument names."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value))
        else:
            flat[key] = value
    return flat


def import_sd_scripts_toml(data: dict[str, Any], source: str = "config") -> ImportReport:
    if is_dataset_config(data):
        raise LoraforgeError(
            f"{source} is an sd-scripts dataset config ([[datasets]]), not a training config",
            "loraforge renders its own dataset config from --dataset; import the --config_file TOML instead",
        )
    imp = _Importer(source, "sd-scripts")
    rules = _rules("sd_scripts_keys.tsv")
    flat = _flatten(data)
    module = str(flat.get("network_module", "networks.lora"))
    network_args = _parse_network_args(flat.get("network_args"))
    steps = convert("int_or_unset", flat.get("max_train_steps"))
    for key in sorted(flat, key=str.lower):
        value = flat[key]
        action, target, note = rules.get(key, ("", "", ""))
        if action == "ignore":
            imp.ignore(key, note)
        elif action == "field":
            path, _, kind = target.partition(":")
            converted = convert(
                kind, value[0] if isinstance(value, list) and kind != "list" and kind != "resolution" else value
            )
            if converted is None:
                imp.ignore(key, f"not set ({value!r})")
            else:
                imp.map(key, path, converted)
        elif action == "special" and target == "optimizer":
            _special(imp, "optimizer", key, value, flat, None, "", "", steps)
        elif action == "special" and target == "scheduler":
            _special(imp, "scheduler", key, value, flat, None, "", "", steps)
        elif action == "special" and target == "network_module":
            algo = network_args.get("algo")
            if module == "networks.lora":
                imp.map(key, "network.type", "locon" if "conv_dim" in network_args else "lora")
            elif module == "lycoris.kohya" and isinstance(algo, str) and algo.lower() in LYCORIS_ALGOS:
                imp.map(key, "network.type", LYCORIS_ALGOS[algo.lower()])
            elif module == "networks.dylora":
                imp.map(key, "network.type", "dylora")
            elif module == "networks.lora_flux":
                imp.map(key, "network.type", "lora")
            else:
                imp.kohya(key, "network_module", module)
        elif action == "special" and target == "network_args":
            args = {k: v for k, v in network_args.items() if k != "algo"}
            if not args:
                imp.ignore(key, "only names the LyCORIS algorithm (network.type)" if network_args else "empty")
            else:
                for name, arg_value in args.items():
                    _put(imp.report.layer, f"network.args.{name}", arg_value)
                imp.report.entries.append(Entry(key, "mapped", "network.args." + ", network.args.".join(sorted(args))))
        elif key in sd_scripts_options():
            imp.kohya(key, key, typed_option(key, value) if not _empty(value) else value)
        else:
            imp.ignore(key, "not an option of sd-scripts' train_network.py")
    return imp.report


def _parse_network_args(value: Any) -> dict[str, Any]:
    if not value:
        return {}
    items = value if isinstance(value, list) else shlex.split(str(value))
    result: dict[str, Any] = {}
    for item in items:
        name, _, raw = str(item).partition("=")
        result[name.strip()] = _scalar(raw) if raw else True
    return result


# --- files ----------------------------------------------------------------------------------------------------


def import_file(path: Path) -> ImportReport:
    """Import a Kohya GUI .json preset or an sd-scripts .toml config file."""
    if not path.exists():
        raise LoraforgeError(f"preset file {path} does not exist", "check the path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise LoraforgeError(f"{path} is not a Kohya GUI preset (expected a JSON object)")
            return import_kohya_gui(data, path.name)
        if suffix == ".toml":
            return import_sd_scripts_toml(tomllib.loads(path.read_text(encoding="utf-8")), path.name)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise LoraforgeError(
            f"{path} cannot be read: {exc}", "is it a Kohya GUI .json preset or an sd-scripts .toml?"
        ) from None
    raise LoraforgeError(
        f"{path}: unknown preset format {suffix!r}", "use a Kohya GUI .json, an sd-scripts .toml or a .yaml preset"
    )
