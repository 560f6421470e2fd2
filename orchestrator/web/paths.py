"""Path parameters, resolved inside their folder and never outside it.

Every name or relative path that arrives in a URL goes through :func:`child` or :func:`inside`: decoded once,
checked part by part (no ``..``, no absolute path, no backslash, no NUL, nothing hidden), then resolved, symbolic
links included, and refused unless the result still lies in the folder it was asked for. A refusal is a plain 404:
it says nothing about what exists outside.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.web.responses import HttpError

MAX_NAME = 255


def check_name(name: str) -> str:
    """One path segment: a run folder's name, a job or draft id, a file name."""
    if (
        not name
        or len(name) > MAX_NAME
        or name in (".", "..")
        or name.startswith(".")
        or any(c in name for c in "/\\\0")
        or any(ord(c) < 32 for c in name)
    ):
        raise HttpError(404, "not found")
    return name


def child(root: Path, name: str) -> Path:
    """``root/name`` for a direct child of ``root`` that exists."""
    path = inside(root, check_name(name))
    if not path.exists():
        raise HttpError(404, "not found")
    return path


def inside(root: Path, relative: str) -> Path:
    """``root/relative`` resolved; 404 when any part is unsafe or the result leaves ``root``."""
    if not relative or relative.startswith(("/", "\\")) or len(relative) > 4096:
        raise HttpError(404, "not found")
    parts = relative.split("/")
    for part in parts:
        if part in ("", ".", "..") or part.startswith(".") or any(c in part for c in "\\\0"):
            raise HttpError(404, "not found")
    base = root.resolve()
    target = (base / relative).resolve()
    if target != base and not target.is_relative_to(base):
        raise HttpError(404, "not found")
    return target
