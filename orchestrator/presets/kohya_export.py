"""Export a job or preset layer to a Kohya GUI JSON preset or an sd-scripts --config_file TOML.

Both start from what a run would render (backends.kohya.options.training_options), so an exported file trains
what loraforge trains; the inverse of kohya_import for every setting both sides can express: import(export(x)) == x.
No path and no secret is ever exported.
"""

from __future__ import annotations

import shlex
from typing import Any

from backends.kohya.options import refuse_secrets, training_options
from orchestrator.job import JobSpec, build_job, merge_layers
from orchestrator.presets.kohya_values import PLACEHOLDER, gui_lora_type, rules


def _job(layer: dict[str, Any]) -> JobSpec:
    refuse_secrets(layer.get("backend_args", {}).get("kohya", {}), "backend_args.kohya")
    training = layer.get("training", {})
    length = {} if training.get("steps") or training.get("epochs") else {"training": {"epochs": 1}}
    return build_job(merge_layers(PLACEHOLDER, length, layer), "preset")


def _sets_length(layer: dict[str, Any]) -> bool:
    training = layer.get("training", {})
    return bool(training.get("steps") or training.get("epochs"))


def to_sd_scripts(layer: dict[str, Any]) -> dict[str, Any]:
    """A flat sd-scripts --config_file mapping (write it with tomli_w). The batch size, resolution and caption
    shuffling, which a run puts in its dataset config, are top-level options here."""
    job = _job(layer)
    out = training_options(job)
    if not _sets_length(layer):
        out.pop("max_train_epochs")  # the placeholder's
    out["train_batch_size"] = job.training.batch_size
    out["resolution"] = f"{job.training.resolution},{job.training.resolution}"
    if job.training.shuffle_captions:
        out["shuffle_caption"] = True
        out["keep_tokens"] = 1 if job.trigger else 0
    out.update(job.backend_args.get("kohya", {}))
    return out


def to_kohya_gui(layer: dict[str, Any]) -> dict[str, Any]:
    """A Kohya GUI preset: sd-scripts' options under the GUI's own key names where it has one (the rest in
    additional_parameters), the network as LoRA_type plus the GUI's fields for network arguments."""
    job = _job(layer)
    options = training_options(job)
    out: dict[str, Any] = {}
    if job.family == "flux":
        out["LoRA_type"] = "Flux1"
        out["flux1_checkbox"] = True
    else:
        out["LoRA_type"] = gui_lora_type(job.network.type)
    out["sdxl"] = job.family == "sdxl"
    gui_args = _netarg_keys()
    extra: dict[str, Any] = {}
    for name, value in job.network.args.items():
        if name in gui_args:
            out[gui_args[name]] = value
        else:
            extra[name] = value
    for option in ("network_module", "network_args"):  # said by LoRA_type and the fields above
        options.pop(option, None)
    # the GUI's defaults for what the job leaves unset, so the preset loads as written
    out |= {"network_dropout": 0, "text_encoder_lr": 0, "lr_warmup": 0, "noise_offset_type": "Original"}
    out |= {"noise_offset": 0, "min_snr_gamma": 0, "save_every_n_steps": 0}
    out["max_train_steps"] = str(options.pop("max_train_steps", ""))  # the GUI keeps it as text
    out["epoch"] = options.pop("max_train_epochs", None) or 1
    out["optimizer"] = options.pop("optimizer_type")
    out["seed"] = str(options.pop("seed"))
    out["train_batch_size"] = job.training.batch_size
    out["max_resolution"] = f"{job.training.resolution},{job.training.resolution}"
    out["shuffle_caption"] = job.training.shuffle_captions
    out["num_processes"] = job.distributed.gpus
    out["num_machines"] = job.distributed.nodes
    gui_keys = rules("kohya_gui_keys.tsv")
    additional: dict[str, Any] = {}
    for option, value in options.items():
        if gui_keys.get(option, ("",))[0] in ("field", "special"):
            out[option] = value
        else:
            additional[option] = value  # no GUI field: passed as an argument (lr_warmup_steps: exact, not a percent)
    if extra:
        additional["network_args"] = " ".join(f"{k}={v}" for k, v in extra.items())
    additional.update(job.backend_args.get("kohya", {}))
    out["additional_parameters"] = _cli_args(additional)
    return out


def _netarg_keys() -> dict[str, str]:
    """network.args name -> GUI key, from the import table."""
    keys = {}
    for key, (action, target, _) in rules("kohya_gui_keys.tsv").items():
        if action in ("netarg", "lycoris"):
            keys[target.partition(":")[0]] = key
    return keys


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
