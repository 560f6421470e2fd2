"""kohya-ss sd-scripts as a loraforge backend: families.py (each model family's script, LoRA module and options,
from families.toml), parts.py (where a model's checkpoint, text encoders and autoencoder files come from),
options.py (a JobSpec in sd-scripts' terms, and the optimizer table optimizers.tsv), env.py (the checkout, its venv
and the option names of its scripts), logs.py (its output as events), backend.py (the class)."""

from backends.kohya.backend import KohyaBackend
from backends.kohya.logs import KohyaLogParser

__all__ = ["KohyaBackend", "KohyaLogParser"]
