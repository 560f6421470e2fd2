"""The images a trainer will see in a dataset folder, with their captions and sizes: read once per run.

The rule, the one every stage uses (step plan, rendering, metadata, reports): every file under the folder whose
suffix is one both trainers read (.png .jpg .jpeg .webp .bmp, any case), in the folder or a subfolder, except
hidden files and anything under a hidden folder (caches, ``.git``). Its caption is ``IMAGE.txt`` beside it
(``IMAGE.caption`` where there is no ``.txt``). An image whose header cannot be read is listed apart and never
trained on.

Trainers do not all read a folder the same way (sd-scripts ignores subfolders and mixed-case suffixes), so no
trainer reads the user's folder: each run trains from its own copy (:func:`write_run_copy`), hard links to exactly
these images and caption files with exactly these captions.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.errors import LoraforgeError
from orchestrator.userpath import user_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_SUFFIXES = (".txt", ".caption")
RUN_COPY_MARKER = ".loraforge-run-copy"  # names a folder write_run_copy made (and may replace)


@dataclass(frozen=True)
class DatasetImage:
    path: Path  # absolute
    name: str  # relative to the dataset folder, with "/"
    width: int
    height: int
    caption: str | None  # None: no caption file (or an empty one)


@dataclass(frozen=True)
class Dataset:
    root: Path
    images: tuple[DatasetImage, ...]
    unreadable: tuple[tuple[str, str], ...] = ()  # (name, why): image files no trainer will see

    @property
    def count(self) -> int:
        return len(self.images)

    def sizes(self) -> list[tuple[int, int]]:
        return [(image.width, image.height) for image in self.images]

    def without_trigger(self, trigger: str) -> list[DatasetImage]:
        """Images whose caption does not hold the trigger as a whole phrase (an image without a caption neither)."""
        from orchestrator.captions.trigger import has_trigger

        return [i for i in self.images if i.caption is None or not has_trigger(i.caption, trigger)]

    def with_trigger(self, trigger: str) -> Dataset:
        """The same images, the trigger put in front of every caption that lacks it (for a run's copy only)."""
        from orchestrator.captions.trigger import apply_trigger

        images = tuple(replace(i, caption=apply_trigger(i.caption or "", trigger)) for i in self.images)
        return replace(self, images=images)

    def fingerprint(self) -> str:
        """A hash over the images' names and bytes and their captions as trained."""
        digest = hashlib.sha256()
        for image in self.images:
            digest.update(image.name.encode("utf-8", "surrogateescape") + b"\0")
            with image.path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\0" + (image.caption or "").encode("utf-8", "surrogateescape") + b"\0")
        return digest.hexdigest()[:16]


def is_dataset_image(name: str) -> bool:
    """Whether a file name (relative to the dataset folder, with "/") is one of the dataset's images by the rule."""
    parts = name.split("/")
    return not any(part.startswith(".") for part in parts) and parts[-1].lower().endswith(IMAGE_SUFFIXES)


def load_dataset(folder: Path) -> Dataset:
    """Read a dataset folder: the image list, each image's size (from its header: nothing is decoded) and caption."""
    root = user_path(folder).resolve()
    if not root.is_dir():
        raise LoraforgeError(
            f"dataset folder {root} does not exist" if not root.exists() else f"dataset {root} is not a folder",
            "pass the folder of prepared images (or a photo folder to `loraforge train PHOTOS ...`)",
        )
    from PIL import Image

    images: list[DatasetImage] = []
    unreadable: list[tuple[str, str]] = []
    for path, name in _walk(root):
        try:
            with Image.open(path) as opened:
                width, height = opened.size
                kind = opened.format or ""
            if not _complete(path, kind):
                unreadable.append((name, f"the {kind} file is cut short (copied or downloaded only in part)"))
                continue
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            unreadable.append((name, f"cannot read the image header: {exc}"))
            continue
        images.append(DatasetImage(path, name, width, height, _read_caption(path)))
    return Dataset(root, tuple(images), tuple(unreadable))


def _complete(path: Path, kind: str) -> bool:
    """Whether the file has its format's end, from its last bytes only (nothing is decoded): a truncated JPEG has a
    header PIL reads happily, and a trainer dies on it minutes later, while caching."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 1024))
        tail = f.read()
        if kind == "WEBP" or kind == "BMP":
            f.seek(0)
            head = f.read(12)
    if kind == "JPEG":
        return b"\xff\xd9" in tail  # end of image (some cameras pad after it)
    if kind == "PNG":
        return b"IEND" in tail
    if kind == "WEBP":
        return len(head) == 12 and int.from_bytes(head[4:8], "little") + 8 <= size
    if kind == "BMP":
        return len(head) >= 6 and int.from_bytes(head[2:6], "little") <= size
    return True


def _walk(root: Path) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:  # a symlink loop, or a folder linked twice: read it once
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(folder)
        for file in sorted(files):
            path = base / file
            name = path.relative_to(root).as_posix()
            if is_dataset_image(name) and path.is_file():
                found.append((path, name))
    return found


def _read_caption(image: Path) -> str | None:
    for suffix in CAPTION_SUFFIXES:
        sidecar = image.with_suffix(suffix)
        try:
            text = sidecar.read_bytes().decode("utf-8", "replace").strip()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            continue
        except OSError:
            return None
        return " ".join(text.split()) or None
    return None


# --- the per-run copy ------------------------------------------------------------------------------------------


def run_copy_name(image: DatasetImage) -> str:
    """A flat file name for an image in a run's copy: its path in the dataset with "/" as "__", its suffix in lower
    case (sd-scripts reads only lower- or upper-case suffixes, and no subfolders)."""
    stem, dot, suffix = image.name.rpartition(".")
    flat = re.sub(r"[\x00-\x1f]", "_", stem.replace("/", "__"))
    return f"{flat}{dot}{suffix.lower()}"


def write_run_copy(images: list[DatasetImage] | tuple[DatasetImage, ...], target: Path, dataset_root: Path) -> Path:
    """A fresh folder holding exactly ``images`` (hard links where the file system allows, else copies) and one
    ``.txt`` caption each, written from :attr:`DatasetImage.caption`. Only a folder this function made is ever
    replaced, and never one that overlaps the dataset."""
    target = Path(target)
    source_r, target_r = dataset_root.resolve(), target.resolve()
    if target_r == source_r or source_r in target_r.parents or target_r in source_r.parents:
        raise LoraforgeError(
            f"the dataset {dataset_root} and the run's image folder {target} overlap",
            "write the run elsewhere (another -o or output.dir), or move the dataset",
        )
    if target.exists() or target.is_symlink():
        if not (target / RUN_COPY_MARKER).is_file():
            raise LoraforgeError(
                f"{target} exists and was not made by loraforge: it would be replaced by the run's copy of the dataset",
                "use another output folder, or move that folder away",
            )
        shutil.rmtree(target)
    target.mkdir(parents=True)
    (target / RUN_COPY_MARKER).write_text("made by loraforge: the images this run trains on; replaced on each run\n")
    used: set[str] = set()
    for image in images:
        name = run_copy_name(image)
        stem, dot, suffix = name.rpartition(".")
        n = 1
        while name.lower() in used:  # "a/b.jpg" and "a__b.jpg" both flatten to "a__b.jpg"
            n += 1
            name = f"{stem}-{n}{dot}{suffix}"
        used.add(name.lower())
        dest = target / name
        try:
            os.link(image.path, dest)
        except OSError:
            shutil.copy2(image.path, dest)  # its modification time too: reuse keys tell an image by size and time
        dest.with_suffix(".txt").write_text(image.caption or "", encoding="utf-8")
    return target
