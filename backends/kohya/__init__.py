"""kohya-ss sd-scripts as a loraforge backend: families.py (each model family's script, LoRA module and options,
from families.toml), parts.py (where a model's checkpoint, text encoders and autoencoder files come from),
options.py (a JobSpec in sd-scripts' terms, and the optimizer table optimizers.tsv), env.py (the checkout, its venv
and the option names of its scripts), logs.py (its output as events), warm.py (what its interpreter imports ahead
of a run), backend.py (the class).

Importing the package imports none of them: a command's first step reads warm.py alone (its launcher then imports
while loraforge loads the rest); the names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.kohya.backend import KohyaBackend
    from backends.kohya.logs import KohyaLogParser

__all__ = ["KohyaBackend", "KohyaLogParser"]
_HOMES = {"KohyaBackend": "backends.kohya.backend", "KohyaLogParser": "backends.kohya.logs"}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
