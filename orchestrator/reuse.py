"""What a trainer computed in one run, reused by the next run on this machine: text-encoder outputs, latents.

Each run lets the trainer write its caches into the run's own folder: never the dataset, never a folder another run
writes at the same time. Before the trainer starts, the files an earlier run left under the same key are hard-linked
in (:func:`seed`); after a run that finished, the files it added go back under the key, each by an atomic rename
(:func:`harvest`). The key is a digest of everything the cached values depend on, named by the backend (the model,
the images' content, resolution, captions, the backend's version): any change is another key, so invalidation is a
fresh folder, never a stale file. They live in ``$LORAFORGE_HOME/cache/reuse/<key>``; deleting that folder is safe.

A trainer that writes its caches beside the images (sd-scripts' ``<image>_..._sd.npz``) shares its folder with the
run's copy of the dataset: its Reuse names the cache files by a glob (``files``), and nothing else of the folder is
ever harvested or seeded. A seeded file is a hard link to the shared one: a trainer must only read a cache file it
accepts (each backend's key covers what its trainer checks before it accepts one), never rewrite it in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.envs import cache_dir
from orchestrator.userpath import user_path


@dataclass(frozen=True)
class Reuse:
    local: Path  # the run's own cache folder, which the trainer writes
    key: str  # digest of what the cached values depend on (make it with :func:`key`)
    what: str  # for the run's log: "text embeddings", "latents"
    files: str = "*"  # a glob on the file names that are cache files (the folder may hold others, never taken)

    @property
    def shared(self) -> Path:
        return cache_dir() / "reuse" / self.key


def key(*parts: object) -> str:
    """A digest of ``parts`` (JSON values)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def files_signature(path: Path) -> list[tuple[str, int, int]]:
    """What a local model or dataset is, cheaply: every file's name, size and modification time (a changed or
    replaced file changes its signature; nothing is read)."""
    path = user_path(path)
    if path.is_file():
        stat = path.stat()
        return [(path.name, stat.st_size, stat.st_mtime_ns)]
    found = []
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            with contextlib.suppress(OSError):
                stat = os.stat(os.path.join(folder, name))
                found.append((os.path.relpath(os.path.join(folder, name), path), stat.st_size, stat.st_mtime_ns))
    return found


def seed(reuse: Reuse) -> int:
    """Link what earlier runs cached under the key into the run's folder; the number of files."""
    if not reuse.shared.is_dir():
        return 0
    count = 0
    for source in reuse.shared.rglob(reuse.files):
        if not source.is_file() or source.name.startswith(".tmp-"):
            continue
        target = reuse.local / source.relative_to(reuse.shared)
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            _link_or_copy(source, target)
            count += 1
    return count


def harvest(reuse: Reuse) -> int:
    """Put the files this run added under the key (after a run that finished: they are complete); the number."""
    if not reuse.local.is_dir():
        return 0
    count = 0
    for source in reuse.local.rglob(reuse.files):
        if not source.is_file():
            continue
        target = reuse.shared / source.relative_to(reuse.local)
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".tmp-{os.getpid()}-{target.name}")
        try:
            _link_or_copy(source, temporary)
            os.replace(temporary, target)  # another run harvesting the same file: one of them wins, both whole
            count += 1
        finally:
            temporary.unlink(missing_ok=True)
    return count


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError as exc:
        if isinstance(exc, FileExistsError):
            raise
        import shutil

        shutil.copyfile(source, target)
