"""Dataset preparation: photos in, a clean training folder out, with a verdict and reason for every file.

    source photos --scan--> candidates --hash (stat-cached)--> cached result? --no--> pool: decode, check, crop,
    resize, write --> dedupe (perceptual hash) --> captions carried over --> manifest.json, report.html, advice

Nothing in the source is ever modified. A rerun over an unchanged folder does no image work: results are cached
by content hash and options in loraforge's cache folder (never inside the dataset, where a trainer would find the
cached copies and train on every photo twice). The output folder holds the images, their captions, manifest.json
and report.html, nothing else; a rerun deletes only files that a manifest prep itself wrote recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.dataset.inputs import CAPTION_SUFFIXES, extract_zip, list_candidates
from orchestrator.dataset.options import DUPLICATE_DISTANCE, Options, hamming, options_dict
from orchestrator.errors import LoraforgeError
from orchestrator.userpath import user_path

SWEET_SPOTS = {"face": (15, 30), "object": (50, 200), "style": (50, 200)}
MANIFEST = "manifest.json"
MANIFEST_MARK = "loraforge prep"  # in every manifest prep writes: another tool's manifest.json is never obeyed


def prep_cache() -> Path:
    """Prep's cache: results per photo content and options, and the prepared images they point at."""
    from orchestrator.envs import cache_dir

    return cache_dir() / "prep"


@dataclass
class PrepResult:
    out: Path
    accepted: int
    rejected: list[tuple[str, str]]
    manifest_path: Path
    report_path: Path
    advice: list[str]
    entries: list[dict[str, Any]] = field(default_factory=list)
    processed: int = 0  # images decoded this run (0 on a warm rerun)


def _safe_stem(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "image"
    return stem[:60]


def _file_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _HashCache:
    """Content hashes keyed by (path, size, mtime): an unchanged file is not read again. A cache file that does not
    parse (a write cut short by a full disk) is an empty cache, never an error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        loaded = _read_json(path)
        self.data: dict[str, list[Any]] = loaded if isinstance(loaded, dict) else {}

    def get(self, file: Path) -> str:
        stat = file.stat()
        key = str(file)
        hit = self.data.get(key)
        if hit and hit[0] == stat.st_size and hit[1] == stat.st_mtime_ns:
            return str(hit[2])
        digest = _file_hash(file)
        self.data[key] = [stat.st_size, stat.st_mtime_ns, digest]
        return digest

    def save(self) -> None:
        _write_atomic(self.path, json.dumps(self.data))


def _read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing, unreadable or not JSON."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one (a full disk fails before the rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def prepare_dataset(
    source: Path,
    out: Path,
    *,
    subject: str = "face",
    size: int = 1024,
    crop: str = "auto",
    remove_background: bool = False,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    background_model: str | None = None,
) -> PrepResult:
    source = user_path(source)
    out = user_path(out).resolve()
    if subject not in SWEET_SPOTS:
        raise LoraforgeError(f"unknown subject {subject!r}", "use face, object or style")
    if size % 64 or size < 256:
        raise LoraforgeError(f"--size {size}: must be a multiple of 64, at least 256", "e.g. --size 1024")
    if crop == "auto":
        crop = "face" if subject == "face" else "center"
    if crop not in ("face", "center", "none"):
        raise LoraforgeError(f"--crop {crop!r}: unknown", "use face, center or none")
    if remove_background:
        from orchestrator.dataset.background import check_available

        check_available()
    if not source.exists():
        raise LoraforgeError(f"photo folder {source} does not exist", "pass a folder of photos or a .zip")
    if source.resolve() == out or out.is_relative_to(source.resolve()) and source.is_dir():
        raise LoraforgeError(f"the output folder {out} is inside the photo folder", "write the dataset elsewhere (-o)")
    if source.resolve().is_relative_to(out):
        raise LoraforgeError(
            f"the photo folder {source} is inside the output folder {out}", "write the dataset elsewhere (-o)"
        )
    _check_foreign_manifest(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = prep_cache()
    (cache / "images").mkdir(parents=True, exist_ok=True)
    options = Options(subject, size, crop, remove_background, background_model)
    options_key = hashlib.md5(options.key().encode()).hexdigest()[:8]

    with tempfile.TemporaryDirectory(prefix="loraforge-zip-") as unzip:
        refused: list[tuple[Path, str]] = []
        root = source
        if source.is_file():
            if source.suffix.lower() != ".zip":
                raise LoraforgeError(f"{source} is a file", "pass a folder of photos or a .zip archive")
            root, refused = extract_zip(source, Path(unzip))
        candidates, skipped = list_candidates(root)
        skipped = refused + skipped

        def display(path: Path) -> str:
            """How a file is named to the user: its place in the folder, or inside the zip."""
            if root == source:
                return str(path)
            if path.is_absolute() and path.is_relative_to(root):
                return str(source / path.relative_to(root))
            return f"{source}:{path}"  # a member as the archive names it (a refused one may be absolute)

        hashes = _HashCache(cache / "hashes.json")
        jobs: list[tuple[str, str, dict[str, Any]]] = []
        results: dict[str, dict[str, Any]] = {}
        digests: dict[str, str] = {}
        for path in candidates:
            try:
                digest = hashes.get(path)
            except OSError as exc:
                skipped.append((path, f"unreadable: {exc.strerror or exc}"))
                continue
            digests[str(path)] = digest
            entry = _cached_result(cache / f"{digest}-{options_key}.json")
            if entry is not None:
                entry["source"] = str(path)
                results[str(path)] = entry
                continue
            output = cache / "images" / f"{digest}-{options_key}.jpg"
            jobs.append((str(path), str(output), options_dict(options)))
        hashes.save()

        for done, entry in enumerate(_run(jobs, workers), start=1):
            entry["sha"] = digests[entry["source"]]
            _write_atomic(cache / f"{entry['sha']}-{options_key}.json", json.dumps(entry))
            results[entry["source"]] = entry
            if on_progress:
                on_progress(done, len(jobs))

        entries = [dict(results[str(p)], source=display(p)) for p in candidates if str(p) in results]
        for entry in entries:
            entry.setdefault("sha", digests.get(entry["source"], ""))
        _dedupe(entries)
        for entry in entries:
            if entry["verdict"] == "accepted":
                name = f"{_safe_stem(Path(entry['source']))}-{entry['sha'][:8]}.jpg"
                entry["output"] = _publish(Path(entry["output"]), out / name)
                _carry_caption(Path(_original(entry, source, root)), Path(entry["output"]))
        entries += [{"source": display(p), "verdict": "rejected", "reasons": [r], "output": None} for p, r in skipped]

    _remove_stale(out, entries)
    from orchestrator.dataset.report import write_manifest, write_report

    manifest_path = write_manifest(out / MANIFEST, entries, options)
    report_path = write_report(out / "report.html", entries, options)
    accepted = sum(1 for e in entries if e["verdict"] == "accepted")
    rejected = [(e["source"], "; ".join(e["reasons"])) for e in entries if e["verdict"] != "accepted"]
    return PrepResult(
        out, accepted, rejected, manifest_path, report_path, advice(subject, accepted), entries, len(jobs)
    )


def _original(entry: dict[str, Any], source: Path, root: Path) -> str:
    if root == source:
        return entry["source"]
    return str(root / Path(entry["source"]).relative_to(source))


def _run(jobs: list[tuple[str, str, dict[str, Any]]], workers: int | None):  # type: ignore[no-untyped-def]
    if not jobs:
        return
    from orchestrator.dataset.worker import process_star  # the image libraries: only when there is image work

    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers <= 1 or len(jobs) < 4:
        for job in jobs:
            yield process_star(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(process_star, jobs, chunksize=max(1, min(16, len(jobs) // (workers * 4))))


def _dedupe(entries: list[dict[str, Any]]) -> None:
    """Near-duplicates (perceptual hash within DUPLICATE_DISTANCE): keep the sharpest, reject the others."""
    accepted = sorted(
        (e for e in entries if e["verdict"] == "accepted"), key=lambda e: (-e.get("sharpness", 0), e["source"])
    )
    kept: list[tuple[int, dict[str, Any]]] = []
    for entry in accepted:
        value = int(entry["phash"], 16)
        twin = next((k for h, k in kept if hamming(h, value) <= DUPLICATE_DISTANCE), None)
        if twin is None:
            kept.append((value, entry))
            continue
        entry["verdict"] = "duplicate"
        entry["reasons"] = [f"near-duplicate of {Path(twin['source']).name} (kept the sharper one)"]
        entry["output"] = None


def _cached_result(path: Path) -> dict[str, Any] | None:
    """A cached verdict still valid: it parses, and an accepted photo's prepared image is still there. Anything
    else (missing, torn by a full disk, the image cleaned away) is a miss: the photo is prepared again."""
    entry = _read_json(path)
    if not isinstance(entry, dict) or not isinstance(entry.get("verdict"), str):
        return None
    if entry["verdict"] == "accepted":
        output = entry.get("output")
        if not isinstance(output, str) or not Path(output).is_file() or Path(output).stat().st_size == 0:
            return None
    return entry


def _publish(prepared: Path, target: Path) -> str:
    """Hard-link the cached prepared image into the dataset folder (a copy where links are not possible)."""
    if not target.exists():
        try:
            os.link(prepared, target)
        except OSError:
            shutil.copyfile(prepared, target)
    return str(target)


def _carry_caption(original: Path, output: Path) -> None:
    for suffix in CAPTION_SUFFIXES:
        sidecar = original.with_suffix(suffix)
        if sidecar.exists():
            shutil.copyfile(sidecar, output.with_suffix(".txt"))
            return


def _check_foreign_manifest(out: Path) -> None:
    """Refuse an output folder holding a manifest.json that prep did not write: its entries are not ours to act on."""
    path = out / MANIFEST
    if not path.exists():
        return
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("written_by") != MANIFEST_MARK:
        raise LoraforgeError(
            f"{path} was not written by loraforge prep: {out} looks like another tool's folder",
            "choose a new or empty folder for -o (prep never deletes or overwrites files it did not write)",
        )


def _remove_stale(out: Path, entries: list[dict[str, Any]]) -> None:
    """Outputs of a previous prep whose photo is gone or now rejected. Only what prep's own manifest recorded, by
    plain file name inside ``out``, and only while the file is still the size prep wrote: never a user's file."""
    keep = {Path(e["output"]).name for e in entries if e.get("output")}
    old = _read_json(out / MANIFEST)
    if not isinstance(old, dict) or old.get("written_by") != MANIFEST_MARK or not isinstance(old.get("images"), list):
        return
    for item in old["images"]:
        name = item.get("output") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name or name != Path(name).name or name.startswith(".") or name in keep:
            continue
        image = out / name
        size = item.get("output_bytes")
        if image.is_file() and not image.is_symlink() and (size is None or image.stat().st_size == size):
            image.unlink()
            caption = image.with_suffix(".txt")
            if caption.is_file() and not caption.is_symlink():
                caption.unlink()


def advice(subject: str, accepted: int) -> list[str]:
    low, high = SWEET_SPOTS[subject]
    if accepted == 0:
        return [f"no usable images: a {subject} LoRA needs {low}-{high} good photos"]
    if accepted < low:
        return [
            f"{accepted} usable images: a {subject} LoRA works best with {low}-{high}; add {low - accepted} or more "
            "varied photos (angles, light, backgrounds)"
        ]
    if accepted > high:
        return [
            f"{accepted} usable images: more than the {low}-{high} a {subject} LoRA needs; keep the best and most "
            "varied ones (quality beats quantity)"
        ]
    return [f"{accepted} usable images: within the {low}-{high} sweet spot for a {subject} LoRA"]
