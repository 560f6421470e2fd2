"""Reviewing captions: list them, edit them all as one TSV in $EDITOR, export and import JSON lines.

Paths are relative to the dataset folder with forward slashes, so an export moves between machines. Only captions
whose text really changed are written back, so file times show what a review touched.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.captions.files import find_images, one_line, read_caption, write_caption
from orchestrator.errors import LoraforgeError

TSV_HEADER = "image\tcaption"


@dataclass(frozen=True)
class Entry:
    image: str  # relative to the dataset, "/"-separated
    caption: str | None


def list_captions(dataset: Path) -> list[Entry]:
    return [Entry(img.relative_to(dataset).as_posix(), read_caption(img)) for img in find_images(dataset)]


def _apply(dataset: Path, changes: dict[str, str], source: str) -> list[str]:
    """Write the captions that differ from what is on disk; returns the images whose caption changed."""
    known = {e.image: e.caption for e in list_captions(dataset)}
    unknown = sorted(set(changes) - set(known))
    if unknown:
        raise LoraforgeError(
            f"{source} names {len(unknown)} image(s) that are not in {dataset}: {', '.join(unknown[:5])}",
            "keep the image column as it was written; captions are matched to images by that path",
        )
    changed = []
    for image, caption in changes.items():
        caption = one_line(caption)
        if caption != (known[image] or ""):
            write_caption(dataset / image, caption)
            changed.append(image)
    return changed


# ----------------------------------------------------------------------------------------------- TSV ($EDITOR)
def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}.get(text[i + 1], text[i : i + 2]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def to_tsv(entries: list[Entry]) -> str:
    lines = [TSV_HEADER] + [f"{_escape(e.image)}\t{_escape(e.caption or '')}" for e in entries]
    return "\n".join(lines) + "\n"


def from_tsv(text: str, source: str = "the edited file") -> dict[str, str]:
    rows: dict[str, str] = {}
    # split on "\n" only: captions may hold other line-break characters (form feed, U+2028) that str.splitlines
    # would cut at; a trailing "\r" is the editor's CRLF (a caption's own "\r" is escaped)
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip() or (number == 1 and line == TSV_HEADER):
            continue
        image, tab, caption = line.partition("\t")
        if not tab:
            raise LoraforgeError(
                f"line {number} of {source} has no tab between image and caption: {line[:60]!r}",
                "keep exactly one tab after the image path on each line",
            )
        rows[_unescape(image)] = _unescape(caption)
    return rows


def edit_captions(dataset: Path, editor: str | None = None) -> list[str]:
    """Open every caption as one TSV in the user's editor; write back the ones that changed."""
    editor = editor or os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        raise LoraforgeError("no editor to open the captions in", "set $EDITOR (e.g. export EDITOR=nano)")
    entries = list_captions(dataset)
    with tempfile.TemporaryDirectory(prefix="loraforge-captions-") as tmp:
        path = Path(tmp) / "captions.tsv"
        path.write_text(to_tsv(entries), encoding="utf-8")
        try:
            status = subprocess.call([*shlex.split(editor), str(path)])
        except FileNotFoundError as exc:
            raise LoraforgeError(f"editor {editor!r} was not found", "set $EDITOR to an installed editor") from exc
        if status != 0:
            raise LoraforgeError(f"editor {editor!r} exited with status {status}; no caption was changed")
        edited = from_tsv(path.read_text(encoding="utf-8"), "the edited captions")
    return _apply(dataset, edited, "the edited captions")


# ----------------------------------------------------------------------------------------------- JSON lines
def export_jsonl(dataset: Path, out: Path) -> int:
    entries = list_captions(dataset)
    with out.open("w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps({"image": e.image, "caption": e.caption}, ensure_ascii=False) + "\n")
    return len(entries)


def import_jsonl(dataset: Path, source: Path) -> list[str]:
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LoraforgeError(f"cannot read {source}: {exc.strerror}", "pass an existing .jsonl file") from exc
    changes: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image, caption = row["image"], row["caption"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise LoraforgeError(
                f"line {number} of {source} is not a caption record: {line[:60]!r}",
                'each line must be {"image": "relative/path.jpg", "caption": "text"}',
            ) from exc
        if caption is not None:  # null = no caption in the export: leave the image alone
            changes[str(image)] = str(caption)
    return _apply(dataset, changes, str(source))
