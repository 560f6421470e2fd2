"""Find a captioning model: a local folder as given, else a Hugging Face hub id (cache first, then download).

Offline (no network, or ``HF_HUB_OFFLINE=1``) a hub id that is not cached becomes one clear LoraforgeError that says
what was looked for and how to point ``--model`` at a local folder instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.errors import LoraforgeError
from orchestrator.userpath import user_path

EXTRA_HINT = "pip install 'loraforge[caption]'"


def require(module: str, captioner: str) -> None:
    """Fail early, in user terms, when the optional ``caption`` extra is not installed."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise LoraforgeError(
            f"the {captioner} captioner needs the Python package {module!r}, which is not installed",
            f"install the caption extra: {EXTRA_HINT} (or use --captioner template, which needs no model)",
        )


def _looks_like_path(model: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a folder."""
    return model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1


def resolve_model(model: str, *, captioner: str, files: tuple[str, ...] | None = None) -> Path:
    """A local folder for ``model``. ``files``: only these files are needed (e.g. a WD14 tagger's ONNX and CSV)."""
    local = user_path(model)
    if local.is_dir():
        return local
    if local.exists() or _looks_like_path(model):
        raise LoraforgeError(
            f"captioning model folder {model!r} does not exist" if not local.exists() else f"{model!r} is not a folder",
            "pass --model a folder holding the model's files (config.json, weights, tokenizer), or a hub id",
        )
    require("huggingface_hub", captioner)
    from huggingface_hub import snapshot_download

    patterns = list(files) if files else None
    try:
        return Path(snapshot_download(model, allow_patterns=patterns, local_files_only=True))
    except Exception:  # not in the cache (the exact class differs between huggingface_hub versions)
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    error: Exception | None = None
    if not offline:
        try:
            return Path(snapshot_download(model, allow_patterns=patterns))
        except Exception as exc:  # network down, unknown repo, gated repo: all end in the same advice
            error = exc
    from huggingface_hub.constants import HF_HUB_CACHE

    why = "HF_HUB_OFFLINE is set" if offline else f"the download failed ({type(error).__name__})"
    raise LoraforgeError(
        f"captioning model {model!r} for the {captioner} captioner is not a local folder and is not in the "
        f"Hugging Face cache ({HF_HUB_CACHE}); {why}",
        f"download it where there is internet (`hf download {model} --local-dir DIR`), copy DIR here and pass "
        "--model DIR; or use --captioner template, which needs no model",
    )
