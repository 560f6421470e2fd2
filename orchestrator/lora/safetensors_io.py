"""Read and write .safetensors files as raw bytes: no torch, any dtype (bf16 included), tensors copied bit for bit.

Format: 8-byte little-endian header size, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}},
then the tensor bytes. :func:`read_header` checks every rule the safetensors library enforces (and a few it
trusts), so a broken file is refused here, naming the tensor and the problem, before anything is written from it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import LoraforgeError

MAX_HEADER = 100 * 1024 * 1024
# Bytes per element of every dtype the safetensors format names with a whole number of bytes.
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
FIX = "the file is damaged, incomplete or not a .safetensors file: download or copy it again"


@dataclass
class Tensor:
    dtype: str
    shape: list[int]
    data: bytes


def broken(path: Path, problem: str, tensor: str | None = None) -> LoraforgeError:
    """The one error for a file that breaks the format: which file, which tensor, what is wrong."""
    where = f"tensor {tensor!r}: " if tensor is not None else ""
    return LoraforgeError(f"{path} is not a valid .safetensors file: {where}{problem}", FIX)


def read_header(path: Path) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensor entries, metadata, byte offset of the data section), every entry checked; a clear error otherwise."""
    if path.is_dir():
        raise LoraforgeError(f"{path} is a folder", "pass a LoRA .safetensors file")
    try:
        with path.open("rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise broken(path, f"{file_size} bytes, too short to hold a header")
            (size,) = struct.unpack("<Q", head)
            if size == 0 or size > MAX_HEADER or size > file_size - 8:
                raise broken(path, f"its header length ({size} bytes) does not fit the file ({file_size} bytes)")
            raw = f.read(size)
    except FileNotFoundError:
        raise LoraforgeError(f"{path} does not exist", "check the path") from None
    header = _parse_header(path, raw)
    metadata = _metadata(path, header.pop("__metadata__", None))
    _check_entries(path, header, data_size=file_size - 8 - size)
    return header, metadata, 8 + size


def _parse_header(path: Path, raw: bytes) -> dict[str, Any]:
    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            repeated = next(k for k in keys if keys.count(k) > 1)
            raise broken(path, "its header names it twice", repeated)
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_repeats)
    except UnicodeDecodeError:
        raise broken(path, "its header is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise broken(path, f"its header is not JSON ({exc.msg} at byte {exc.pos})") from None
    except RecursionError:
        raise broken(path, "its header nests too deeply") from None
    if not isinstance(header, dict):
        raise broken(path, f"its header is a JSON {type(header).__name__}, not an object")
    return header


def _metadata(path: Path, metadata: object) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise broken(path, "its __metadata__ is not an object of text values")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise broken(path, f"metadata {key[:80]!r} is {type(value).__name__}, not text")
    return metadata


def _check_entries(path: Path, header: dict[str, Any], data_size: int) -> None:
    """Each entry well formed, its byte length that of its shape and dtype, and the entries tiling the data section
    exactly: in range, no overlap, no gap, nothing after the last (what the safetensors library requires)."""
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise broken(path, "needs exactly dtype, shape and data_offsets", name)
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise broken(path, f"unknown dtype {str(dtype)[:20]!r}", name)
        if not isinstance(shape, list) or not all(_whole(n) for n in shape):
            raise broken(path, f"shape {str(shape)[:60]} is not a list of sizes (whole numbers, 0 or more)", name)
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_whole(n) for n in offsets):
            raise broken(path, f"data_offsets {str(offsets)[:60]} is not [begin, end] (whole numbers, 0 or more)", name)
        begin, end = offsets
        if begin > end:
            raise broken(path, f"data_offsets [{begin}, {end}] end before they begin", name)
        if end > data_size:
            raise broken(path, f"its bytes end at {end}, beyond the {data_size} bytes of data (truncated?)", name)
        expected = math.prod(shape) * DTYPE_SIZES[dtype]
        if end - begin != expected:
            raise broken(
                path, f"shape {shape} of {dtype} is {expected} bytes, but its data_offsets hold {end - begin}", name
            )
        spans.append((begin, end, name))
    position, previous = 0, None
    for begin, end, name in sorted(spans):
        if begin < position:
            raise broken(path, f"its bytes [{begin}, {end}] overlap those of {previous!r}", name)
        if begin > position:
            raise broken(path, f"{begin - position} bytes before it belong to no tensor", name)
        position, previous = end, name
    if position != data_size:
        raise broken(path, f"{data_size - position} bytes after the last tensor belong to no tensor")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    header, metadata, start = read_header(path)
    tensors: dict[str, Tensor] = {}
    with path.open("rb") as f:
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            f.seek(start + begin)
            data = f.read(end - begin)
            if len(data) != end - begin:  # the file shrank since its header was read
                raise broken(path, "the file is shorter than its header says", name)
            tensors[name] = Tensor(entry["dtype"], list(entry["shape"]), data)
    return tensors, metadata


def write(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> Path:
    """Write atomically: a temp file beside the target, fsynced, then renamed over it. A full or read-only disk
    leaves the target as it was (or absent) and no temp file behind; the error names the target."""
    if path.is_dir():
        raise LoraforgeError(f"{path} is a folder", "give the path of a .safetensors file to write")
    if not path.parent.is_dir():
        raise LoraforgeError(f"the folder {path.parent} does not exist", f"create it first (mkdir -p {path.parent})")
    header: dict[str, object] = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        header[name] = {"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + len(t.data)]}
        offset += len(t.data)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise _about(exc, path) from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # what a plain open() would have given (mkstemp gives 0600)
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for name in sorted(tensors):
                f.write(tensors[name].data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _about(exc, path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _sync_folder(path.parent)
    return path


def _about(exc: OSError, path: Path) -> OSError:
    """The same error, naming the file the user asked for rather than our temp file."""
    return type(exc)(exc.errno, exc.strerror, str(path))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
