"""A path as the user typed it (a job's base model, dataset or output folder, a flag), with ``~`` expanded."""

from __future__ import annotations

import os
from pathlib import Path


def user_path(text: str | os.PathLike[str]) -> Path:
    """``text`` with a leading ``~`` or ``~user`` expanded. A ``~name`` that names no user on this machine stays as
    written, as the shell leaves it: pathlib's own expanduser raises RuntimeError for it, and a model id or a folder
    name may start with ``~``."""
    return Path(os.path.expanduser(text))
