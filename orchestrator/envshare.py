"""Backend environments share their largest packages as hard links.

torch with its CUDA libraries and triton is about 4.5 GB of each backend's environment. When a new environment uses
the same Python as one already set up, and pins the same torch, it links that environment's files instead of
installing them again (as uv does): each file then has two names and one copy on disk; pip sees the packages as
installed, and removing or upgrading either environment leaves the other whole (an unlinked name never touches the
other). Only files inside site-packages are linked: console scripts name their own environment's interpreter on
their first line, and no backend runs torch's. Nothing is linked across file systems (pip installs as usual then).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

# torch and torchvision at the pinned versions, and what only they bring: the CUDA libraries and triton
CUDA_AND_TRITON = re.compile(r"^(nvidia-.+|cuda-.+|triton)$")
DIST_INFO = re.compile(r"^(?P<name>.+)-(?P<version>[^-]+)\.dist-info$")


@dataclass(frozen=True)
class Distribution:
    name: str  # normalised: lower case, "-" for runs of "-", "_" and "."
    version: str
    info: Path  # its .dist-info folder


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def site_packages(python: Path) -> Path | None:
    """The site-packages folder of the virtual environment whose interpreter is ``python`` (POSIX layout)."""
    found = sorted((python.parent.parent / "lib").glob("python3.*/site-packages"))
    return found[0] if len(found) == 1 else None


def distributions(site: Path) -> list[Distribution]:
    found = []
    for info in site.glob("*.dist-info"):
        match = DIST_INFO.match(info.name)
        if match and (info / "RECORD").is_file():
            found.append(Distribution(normalise(match["name"]), match["version"], info))
    return found


def shareable(site: Path, pins: dict[str, str]) -> list[Distribution]:
    """What an environment at ``site`` can lend: every pinned package it holds at the pinned version, and its CUDA
    libraries and triton when it holds the pinned torch (they are that torch's own requirements); else nothing."""
    held = distributions(site)
    pinned = [d for d in held if pins.get(d.name) == d.version]
    if "torch" not in {d.name for d in pinned}:
        return []
    return pinned + [d for d in held if CUDA_AND_TRITON.match(d.name)]


def _recorded_files(dist: Distribution) -> list[str]:
    """The files RECORD lists inside site-packages (relative paths), its own dist-info folder included."""
    with open(dist.info / "RECORD", newline="", encoding="utf-8") as handle:
        rows = [row[0] for row in csv.reader(handle) if row]
    return [path for path in rows if not path.startswith(("..", "/")) and ".." not in Path(path).parts]


def link_distribution(dist: Distribution, source: Path, target: Path) -> int:
    """Hard-link one distribution's files from site-packages ``source`` into ``target``; the bytes linked. On any
    failure the links made are removed again and OSError propagates."""
    made: list[Path] = []
    linked = 0
    try:
        for relative in _recorded_files(dist):
            src, dst = source / relative, target / relative
            if not src.is_file() or dst.exists():
                continue  # RECORD may list a byte-compiled file that was never written
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dst)
            made.append(dst)
            linked += src.stat().st_size
    except OSError:
        for path in made:
            path.unlink(missing_ok=True)
        shutil.rmtree(target / dist.info.name, ignore_errors=True)  # no half dist-info that reads as installed
        raise
    return linked


def link_shared(target_python: Path, sibling_pythons: list[Path], pins: dict[str, str]) -> int:
    """Link into a new environment (``target_python``'s) the torch that a sibling environment of the same Python
    holds at ``pins`` (normalised name -> version), with its CUDA libraries and triton; the bytes linked, 0 when no
    sibling matches or the file system refuses hard links."""
    target = site_packages(target_python)
    if target is None:
        return 0
    for python in sibling_pythons:
        source = site_packages(python)
        if source is None or source.parent.name != target.parent.name:  # lib/python3.X: the same Python only
            continue
        lendable = shareable(source, pins)
        if not lendable:
            continue
        linked = 0
        for dist in lendable:
            try:
                linked += link_distribution(dist, source, target)
            except OSError:
                return linked  # another file system, or links refused: pip installs the rest
        return linked
    return 0
