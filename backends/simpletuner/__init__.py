"""The SimpleTuner backend (SimpleTuner 4.10.1 in its own Python 3.12 environment), one module per job:

- ``options``: JobSpec -> config.json and multidatabackend.json values, the held-out draw, option-name checks;
- ``families``: what each model family needs beyond ``model_family`` (flavour, text length) and what it ignores;
- ``env``: the verified versions, setup and check of the environment;
- ``webhooks``: SimpleTuner's raw webhook payloads -> events, every field type-checked;
- ``logs``: its stdout/stderr (and saved webhook captures) -> events, and why a run failed;
- ``backend``: the class the registry names (``backends.simpletuner:SimpleTunerBackend``).
"""

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
