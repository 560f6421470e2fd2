"""Hyperparameter presets: built-in (subject x family, shipped as YAML) and imported Kohya presets.

A preset is a JobSpec layer (a partial nested dict); it sits below the job file and the flags.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any

from orchestrator.errors import LoraforgeError
from orchestrator.userpath import user_path

BUILTIN = Path(__file__).resolve().parent / "builtin"


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN.glob("*.yaml"))


def builtin_path(name: str) -> Path:
    return BUILTIN / f"{name}.yaml"


def preset_for(subject: str, family: str) -> str:
    return f"{subject}-{family}"


def describe(name: str) -> str:
    """The reasoning line of a built-in preset: ``# NAME: ...`` among its leading comments (the first line of the
    older presets; the newer ones open with the command that uses them)."""
    lines = builtin_path(name).read_text(encoding="utf-8").splitlines()
    for line in lines:
        if not line.startswith("#"):
            break
        if line.startswith(f"# {name}: "):
            return line[len(f"# {name}: ") :]
    first = lines[0] if lines else ""
    return first.lstrip("# ").partition(": ")[2] or first


def load_preset_layer(name_or_path: str) -> dict[str, Any]:
    """A built-in name (face-sdxl), or a preset file: loraforge .yaml, Kohya GUI .json or sd-scripts .toml."""
    if name_or_path in builtin_names():
        return _read_yaml(builtin_path(name_or_path))
    path = user_path(name_or_path)
    if not path.exists():
        raise LoraforgeError(
            f"no preset named {name_or_path!r} and no such file",
            f"built-in presets: {', '.join(builtin_names())}; or pass a .yaml / Kohya .json / sd-scripts .toml file",
        )
    if path.suffix.lower() in (".yaml", ".yml"):
        return _read_yaml(path)
    from orchestrator.presets.kohya_import import import_file

    return import_file(path).layer


def _read_yaml(path: Path) -> dict[str, Any]:
    from orchestrator.job import read_yaml

    data = read_yaml(path, "preset") or {}
    if not isinstance(data, dict):
        raise LoraforgeError(f"preset {path} must be a mapping of settings")
    return data


def write_preset_file(path: Path, text: str) -> None:
    """Write a preset (or exported) file whole or not at all: a temporary file beside it, renamed over it, so a
    full disk or a killed process never leaves half a preset under the name."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path.parent))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
