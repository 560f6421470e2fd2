"""kohya-ss sd-scripts as a loraforge backend: options.py (a JobSpec in sd-scripts' terms, and the optimizer table
optimizers.tsv), env.py (the checkout and its venv), logs.py (its output as events), backend.py (the class)."""

from backends.kohya.backend import KohyaBackend
from backends.kohya.logs import KohyaLogParser

__all__ = ["KohyaBackend", "KohyaLogParser"]
