"""Import an sd-scripts ``--config_file`` TOML as a loraforge preset layer; every key is reported exactly once.

sd-scripts reads any [section] of such a file as flat argument names, so the file is flattened first. Rules per key
come from ``sd_scripts_keys.tsv``; a key whose name says key, token, password or secret is dropped and reported by
name, its value never read into the layer.
"""

from __future__ import annotations

import shlex
from typing import Any

from backends.kohya.options import any_script_option
from orchestrator.errors import LoraforgeError
from orchestrator.presets.kohya_values import (
    LYCORIS_ALGOS,
    Entry,
    Importer,
    ImportReport,
    convert,
    empty,
    put,
    rules,
    scalar,
    typed_option,
)
from orchestrator.secrets import is_secret


def is_dataset_config(data: dict[str, Any]) -> bool:
    return "datasets" in data


def import_sd_scripts_toml(data: dict[str, Any], source: str = "config") -> ImportReport:
    if is_dataset_config(data):
        raise LoraforgeError(
            f"{source} is an sd-scripts dataset config ([[datasets]]), not a training config",
            "loraforge renders its own dataset config from --dataset; import the --config_file TOML instead",
        )
    imp = Importer(source, "sd-scripts")
    table = rules("sd_scripts_keys.tsv")
    flat = _flatten(data)
    try:
        network_args = _parse_network_args(flat.get("network_args"))
    except ValueError as exc:  # an unclosed quote: the text is not quoted back, it may hold a secret
        raise LoraforgeError(f"{source}: network_args cannot be split into name=value items ({exc})") from None

    def rule(key: str, value: Any) -> None:
        action, target, note = table.get(key, ("", "", ""))
        if action == "ignore":
            imp.ignore(key, note)
        elif action == "field":
            path, _, kind = target.partition(":")
            one = value[0] if isinstance(value, list) and kind not in ("list", "resolution") else value
            converted = convert(kind, one)
            if converted is None:
                imp.ignore(key, f"not set ({value!r})")
            else:
                imp.map(key, path, converted)
        elif action == "special" and target == "optimizer":
            imp.optimizer(key, value)
        elif action == "special" and target == "scheduler":
            imp.scheduler(key, value)
        elif action == "special" and target == "network_module":
            _network_module(imp, key, str(flat.get("network_module", "networks.lora")), network_args)
        elif action == "special" and target == "network_args":
            _network_args(imp, key, network_args)
        elif any_script_option(key) is not None:  # train_network.py's, or a family script's (sd3, flux, lumina)
            imp.kohya(key, key, typed_option(key, value) if not empty(value) else value)
        else:
            imp.ignore(key, "not an option of sd-scripts' training scripts")

    return imp.each(flat, rule)


def _network_module(imp: Importer, key: str, module: str, network_args: dict[str, Any]) -> None:
    algo = network_args.get("algo")
    if module == "networks.lora":
        imp.map(key, "network.type", "locon" if "conv_dim" in network_args else "lora")
    elif module == "lycoris.kohya" and isinstance(algo, str) and algo.lower() in LYCORIS_ALGOS:
        imp.map(key, "network.type", algo.lower())
    elif module == "networks.dylora":
        imp.map(key, "network.type", "dylora")
    elif module in ("networks.lora_flux", "networks.lora_sd3", "networks.lora_lumina"):  # each family's plain LoRA
        imp.map(key, "network.type", "lora")
    else:
        imp.kohya(key, "network_module", module)


def _network_args(imp: Importer, key: str, network_args: dict[str, Any]) -> None:
    args = {k: v for k, v in network_args.items() if k != "algo" and not is_secret(k)}
    if not args:
        imp.ignore(key, "only names the LyCORIS algorithm (network.type)" if network_args else "empty")
        return
    for name, arg_value in args.items():
        put(imp.report.layer, f"network.args.{name}", arg_value)
    imp.report.entries.append(Entry(key, "mapped", "network.args." + ", network.args.".join(sorted(args))))


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts reads any [section] of a --config_file as flat argument names."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value))
        else:
            flat[key] = value
    return flat


def _parse_network_args(value: Any) -> dict[str, Any]:
    if not value:
        return {}
    items = value if isinstance(value, list) else shlex.split(str(value))
    result: dict[str, Any] = {}
    for item in items:
        name, _, raw = str(item).partition("=")
        result[name.strip()] = scalar(raw) if raw else True
    return result
