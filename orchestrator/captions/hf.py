"""Loading a transformers captioner: the extra installed, the folder found, device and dtype chosen, weights checked.

Shared by florence2, blip and blip2 because the failure modes are the same and must read the same to the user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.captions.base import CaptionerSettings
from orchestrator.captions.device import pick_device, pick_dtype
from orchestrator.captions.hub import require, resolve_model
from orchestrator.errors import LoraforgeError


def prepare(captioner: str, settings: CaptionerSettings, default_model: str) -> tuple[Path, str, Any]:
    """(model folder, device, dtype) after checking that torch and transformers are installed."""
    require("torch", captioner)
    require("transformers", captioner)
    folder = resolve_model(settings.model or default_model, captioner=captioner)
    device = pick_device(settings.device)
    return folder, device, pick_dtype(device)


def load_or_explain(what: str, folder: Path, load: Any, **kwargs: Any) -> Any:
    """Call ``load(folder, **kwargs)``; a folder that does not hold this kind of model becomes a LoraforgeError.

    With ``output_loading_info`` the weights are checked too: a checkpoint whose tensors do not match the class
    (e.g. a remote-code Florence-2 loaded into the native class) would otherwise caption with random weights.
    """
    try:
        result = load(str(folder), **kwargs)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LoraforgeError(
            f"{folder} does not hold a usable {what}: {first}",
            "pass --model a folder written by save_pretrained (config.json, weights, processor and tokenizer "
            "files) or a hub id of this model type",
        ) from exc
    if not kwargs.get("output_loading_info"):
        return result
    model, info = result
    missing = [k for k in info.get("missing_keys", []) if "num_batches_tracked" not in k]
    # A few missing tensors can be legitimate (buffers rebuilt at load); a mismatched checkpoint misses most of them.
    if len(missing) > max(1, len(model.state_dict()) // 4):
        raise LoraforgeError(
            f"{folder} does not match transformers' built-in {what}: {len(missing)} weights missing "
            f"(e.g. {missing[0]})",
            "it may be a checkpoint that needs its own code: use a checkpoint made for transformers (the default "
            "model), or pass --trust-remote-code if you trust the code shipped with it",
        )
    return model


def to_device(model: Any, device: str, dtype: Any) -> Any:
    return model.to(device=device, dtype=dtype).eval()
