"""Read and write .safetensors files as raw bytes: no torch, any dtype (bf16 included), tensors copied bit for bit.

Format: 8-byte little-endian header size, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}},
then the tensor bytes.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import LoraforgeError

MAX_HEADER = 100 * 1024 * 1024


@dataclass
class Tensor:
    dtype: str
    shape: list[int]
    data: bytes


def read_header(path: Path) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensor entries, metadata, byte offset of the data section); a clear error for anything else."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise LoraforgeError(f"{path} is not a .safetensors file (too short)", "pass a LoRA .safetensors file")
            (size,) = struct.unpack("<Q", head)
            if size > MAX_HEADER or size > path.stat().st_size - 8:
                raise LoraforgeError(
                    f"{path} is not a .safetensors file (bad header size)", "pass a LoRA .safetensors file"
                )
            header = json.loads(f.read(size))
    except FileNotFoundError:
        raise LoraforgeError(f"{path} does not exist", "check the path") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LoraforgeError(
            f"{path} is not a .safetensors file (unreadable header)", "pass a LoRA .safetensors file"
        ) from None
    if not isinstance(header, dict):
        raise LoraforgeError(f"{path} is not a .safetensors file", "pass a LoRA .safetensors file")
    metadata = header.pop("__metadata__", {}) or {}
    return header, {str(k): str(v) for k, v in metadata.items()}, 8 + size


def read(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    header, metadata, start = read_header(path)
    tensors: dict[str, Tensor] = {}
    with path.open("rb") as f:
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            f.seek(start + begin)
            data = f.read(end - begin)
            if len(data) != end - begin:
                raise LoraforgeError(f"{path} is truncated (tensor {name})", "the file is incomplete: copy it again")
            tensors[name] = Tensor(entry["dtype"], list(entry["shape"]), data)
    return tensors, metadata


def write(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> Path:
    """Write atomically: a temp file beside the target, fsynced, then renamed over it (never a half file)."""
    header: dict[str, object] = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        header[name] = {"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + len(t.data)]}
        offset += len(t.data)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
    tmp = path.with_name(f".{path.name}.partial")
    with tmp.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in sorted(tensors):
            f.write(tensors[name].data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path
