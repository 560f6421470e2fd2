"""Export a job or preset layer to a Kohya GUI JSON preset or an sd-scripts --config_file TOML.

The inverse of kohya_import for every setting both sides can express: import(export(x)) == x.
"""

from __future__ import annotations

import shlex
from typing import Any

from orchestrator.presets.kohya_import import LORA_TYPES, OPTIMIZERS, _rules

_GUI_OPTIMIZERS = {
    "adamw": "AdamW",
    "adamw8bit": "AdamW8bit",
    "adafactor": "Adafactor",
    "prodigy": "Prodigy",
    "lion": "Lion",
    "sgd": "SGDNesterov",
    "dadaptadam": "DAdaptAdam",
}
_GUI_TYPES = {
    "lora": "Standard",
    "locon": "LyCORIS/LoCon",
    "loha": "LyCORIS/LoHa",
    "lokr": "LyCORIS/LoKr",
    "ia3": "LyCORIS/iA3",
    "dylora": "LyCORIS/DyLoRA",
    "glora": "LyCORIS/GLoRA",
    "boft": "LyCORIS/BOFT",
    "diag-oft": "LyCORIS/Diag-OFT",
}
assert set(_GUI_TYPES.values()) <= set(LORA_TYPES) and set(_GUI_OPTIMIZERS) <= set(OPTIMIZERS.values())


def _netarg_keys() -> dict[str, str]:
    """network.args name -> GUI key, from the import table."""
    keys = {}
    for key, (action, target, _) in _rules("kohya_gui_keys.tsv").items():
        if action in ("netarg", "lycoris"):
            keys[target.partition(":")[0]] = key
    return keys


def to_kohya_gui(layer: dict[str, Any]) -> dict[str, Any]:
    network = layer.get("network", {})
    training = layer.get("training", {})
    saving = layer.get("saving", {})
    out: dict[str, Any] = {}
    family = layer.get("family")
    if family == "flux":
        out["LoRA_type"] = "Flux1"
        out["flux1_checkbox"] = True
    else:
        out["LoRA_type"] = _GUI_TYPES[network.get("type", "lora")]
    out["sdxl"] = family == "sdxl"
    if "rank" in network:
        out["network_dim"] = network["rank"]
    if "alpha" in network:
        out["network_alpha"] = network["alpha"]
    out["network_dropout"] = network.get("dropout") or 0
    gui_args = _netarg_keys()
    extra: dict[str, Any] = {}
    for name, value in network.get("args", {}).items():
        if name in gui_args:
            out[gui_args[name]] = value
        else:
            extra[name] = value  # no GUI field: pass through additional_parameters' network_args is not possible
    if "learning_rate" in training:
        out["learning_rate"] = training["learning_rate"]
        out["unet_lr"] = training["learning_rate"]
    out["text_encoder_lr"] = training.get("text_encoder_lr") or 0
    out["max_train_steps"] = str(training["steps"]) if training.get("steps") else ""
    out["epoch"] = training.get("epochs") or 1
    for key, gui in (("batch_size", "train_batch_size"), ("gradient_accumulation", "gradient_accumulation_steps")):
        if key in training:
            out[gui] = training[key]
    if "resolution" in training:
        out["max_resolution"] = f"{training['resolution']},{training['resolution']}"
    if "optimizer" in training:
        out["optimizer"] = _GUI_OPTIMIZERS[training["optimizer"]]
    if "scheduler" in training:
        out["lr_scheduler"] = training["scheduler"]
    additional: dict[str, Any] = dict(layer.get("backend_args", {}).get("kohya", {}))
    out["lr_warmup"] = 0
    if training.get("warmup_steps"):
        additional["lr_warmup_steps"] = training["warmup_steps"]  # exact, where the GUI's percent would round
    out["seed"] = str(training["seed"]) if "seed" in training else ""
    if "precision" in training:
        out["mixed_precision"] = "no" if training["precision"] == "fp32" else training["precision"]
    for key in ("gradient_checkpointing", "cache_latents"):
        if key in training:
            out[key] = training[key]
    out["noise_offset_type"] = "Original"
    out["noise_offset"] = training.get("noise_offset") or 0
    out["min_snr_gamma"] = training.get("min_snr_gamma") or 0
    out["save_every_n_steps"] = saving.get("every_n_steps") or 0
    if layer.get("output", {}).get("name"):
        out["output_name"] = layer["output"]["name"]
    distributed = layer.get("distributed", {})
    if "gpus" in distributed:
        out["num_processes"] = distributed["gpus"]
    if "nodes" in distributed:
        out["num_machines"] = distributed["nodes"]
    if extra:
        additional["network_args"] = " ".join(f"{k}={v}" for k, v in extra.items())
    out["additional_parameters"] = _cli_args(additional)
    return out


def _cli_args(options: dict[str, Any]) -> str:
    parts = []
    for name, value in options.items():
        if value is True:
            parts.append(f"--{name}")
        elif isinstance(value, list):
            parts.append(f"--{name} " + " ".join(shlex.quote(str(v)) for v in value))
        else:
            parts.append(f"--{name}={shlex.quote(str(value))}")
    return " ".join(parts)


def to_sd_scripts(layer: dict[str, Any]) -> dict[str, Any]:
    """A flat sd-scripts --config_file mapping (write it with tomli_w)."""
    network = layer.get("network", {})
    training = layer.get("training", {})
    out: dict[str, Any] = {}
    kind = network.get("type", "lora")
    args = dict(network.get("args", {}))
    if kind in ("lora",) or layer.get("family") == "flux" and kind == "lora":
        out["network_module"] = "networks.lora_flux" if layer.get("family") == "flux" else "networks.lora"
    elif kind == "locon" and "conv_dim" in args and "algo" not in args:
        out["network_module"] = "lycoris.kohya"
        args = {"algo": "locon", **args}
    else:
        out["network_module"] = "lycoris.kohya"
        args = {"algo": kind, **args}
    if args:
        out["network_args"] = [f"{k}={v}" for k, v in args.items()]
    simple = {
        ("network", "rank"): "network_dim",
        ("network", "alpha"): "network_alpha",
        ("network", "dropout"): "network_dropout",
        ("training", "learning_rate"): "learning_rate",
        ("training", "text_encoder_lr"): "text_encoder_lr",
        ("training", "steps"): "max_train_steps",
        ("training", "epochs"): "max_train_epochs",
        ("training", "batch_size"): "train_batch_size",
        ("training", "gradient_accumulation"): "gradient_accumulation_steps",
        ("training", "optimizer"): "optimizer_type",
        ("training", "scheduler"): "lr_scheduler",
        ("training", "warmup_steps"): "lr_warmup_steps",
        ("training", "seed"): "seed",
        ("training", "gradient_checkpointing"): "gradient_checkpointing",
        ("training", "cache_latents"): "cache_latents",
        ("training", "noise_offset"): "noise_offset",
        ("training", "min_snr_gamma"): "min_snr_gamma",
        ("saving", "every_n_steps"): "save_every_n_steps",
        ("output", "name"): "output_name",
    }
    for (section, key), option in simple.items():
        value = layer.get(section, {}).get(key)
        if value is not None:
            out[option] = _GUI_OPTIMIZERS[value] if option == "optimizer_type" else value
    if "resolution" in training:
        out["resolution"] = f"{training['resolution']},{training['resolution']}"
    if "precision" in training:
        out["mixed_precision"] = "no" if training["precision"] == "fp32" else training["precision"]
    out.update(layer.get("backend_args", {}).get("kohya", {}))
    return out
