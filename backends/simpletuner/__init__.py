"""The SimpleTuner backend (SimpleTuner 4.10.1 in its own Python 3.12 environment), one module per job:

- ``options``: JobSpec -> config.json and multidatabackend.json values, the held-out draw, option-name checks;
- ``families``: what each model family needs beyond ``model_family`` (flavour, text length) and what it ignores;
- ``env``: the verified versions, setup and check of the environment;
- ``webhooks``: SimpleTuner's raw webhook payloads -> events, every field type-checked;
- ``logs``: its stdout/stderr (and saved webhook captures) -> events, and why a run failed;
- ``warm``: what its interpreter imports ahead of a run;
- ``backend``: the class the registry names (``backends.simpletuner:SimpleTunerBackend``).

Importing the package imports none of them: a command's first step reads warm.py alone (the trainer then imports
while loraforge loads the rest); the names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.simpletuner.backend import SimpleTunerBackend, checkpoint_complete, output_dir
    from backends.simpletuner.env import PINS, VERSION, describe_env
    from backends.simpletuner.logs import SimpleTunerLogParser
    from backends.simpletuner.options import known_options, map_options, reject_unknown_options, split_dataset
    from backends.simpletuner.webhooks import BadPayload, translate

__all__ = [
    "PINS",
    "VERSION",
    "BadPayload",
    "SimpleTunerBackend",
    "SimpleTunerLogParser",
    "checkpoint_complete",
    "describe_env",
    "known_options",
    "map_options",
    "output_dir",
    "reject_unknown_options",
    "split_dataset",
    "translate",
]
_HOMES = {
    "SimpleTunerBackend": "backend",
    "checkpoint_complete": "backend",
    "output_dir": "backend",
    "PINS": "env",
    "VERSION": "env",
    "describe_env": "env",
    "SimpleTunerLogParser": "logs",
    "known_options": "options",
    "map_options": "options",
    "reject_unknown_options": "options",
    "split_dataset": "options",
    "BadPayload": "webhooks",
    "translate": "webhooks",
}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
