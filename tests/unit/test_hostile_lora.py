"""Hostile .safetensors files through `loraforge inspect` and `loraforge convert`, and convert's output on failing
disks: every broken file is refused in one line naming the tensor and the problem (exit 2) before anything is
written; what convert writes, the safetensors library reads."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_hostile_harness import Case, Result, Setup, World, params, run_case

MODULE = "lora_unet_down_blocks_0_attentions_0_proj_in"
DOWN, UP, ALPHA = f"{MODULE}.lora_down.weight", f"{MODULE}.lora_up.weight", f"{MODULE}.alpha"


def f32(*shape: int) -> bytes:
    return np.arange(int(np.prod(shape)), dtype="<f4").tobytes()


def good_entries() -> list[tuple[str, str, list[int], bytes]]:
    """A valid SD 1.5 Kohya LoRA of one rank-4 module: (name, dtype, shape, bytes)."""
    return [
        (DOWN, "F32", [4, 8], f32(4, 8)),
        (UP, "F32", [8, 4], f32(8, 4)),
        (ALPHA, "F32", [], struct.pack("<f", 4.0)),
    ]


def assemble(
    entries: list[tuple[str, str, list[int], bytes]],
    metadata: object = None,
    *,
    edit: Callable[[dict], None] | None = None,  # type: ignore[type-arg]
    header_bytes: Callable[[bytes], bytes] | None = None,
    tail: bytes = b"",
    length: Callable[[int], int] | None = None,
) -> bytes:
    """A .safetensors file from ``entries``, with a hook at each level a broken file can be broken at."""
    header: dict[str, object] = {"__metadata__": metadata if metadata is not None else {"ss_network_dim": "4"}}
    data = b""
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if edit is not None:
        edit(header)
    blob = json.dumps(header).encode()
    if header_bytes is not None:
        blob = header_bytes(blob)
    size = len(blob) if length is None else length(len(blob))
    return struct.pack("<Q", size) + blob + data + tail


def entry(name: str, **changes: object) -> Callable[[dict], None]:  # type: ignore[type-arg]
    def edit(header: dict) -> None:  # type: ignore[type-arg]
        header[name].update(changes)

    return edit


def replaced(name: str, dtype: str, shape: list[int], raw: bytes) -> list[tuple[str, str, list[int], bytes]]:
    return [(n, dtype, shape, raw) if n == name else (n, d, s, r) for n, d, s, r in good_entries()]


def diffusers_entries() -> list[tuple[str, str, list[int], bytes]]:
    base = "unet.down_blocks.0.attentions.0.proj_in"
    return [(f"{base}.lora_A.weight", "F32", [4, 8], f32(4, 8)), (f"{base}.lora_B.weight", "F32", [8, 4], f32(8, 4))]


def nested(depth: int) -> Callable[[bytes], bytes]:
    return lambda blob: blob[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"


def repeat_first_tensor(blob: bytes) -> bytes:
    text = blob.decode()
    first = json.dumps({DOWN: json.loads(text)[DOWN]})[1:-1]
    return (text[:-1] + ", " + first + "}").encode()


# name -> (file bytes, what the message names). Each is run through inspect and convert.
BROKEN: dict[str, tuple[bytes, str]] = {
    "empty-file": (b"", r"too short"),
    "five-bytes": (b"\x01\x02\x03\x04\x05", r"too short"),
    "header-longer-than-file": (assemble(good_entries(), length=lambda n: n + 10_000), r"header length"),
    "header-length-zero": (assemble(good_entries(), length=lambda n: 0), r"header length"),
    "header-length-2^63": (assemble(good_entries(), length=lambda n: 2**63), r"header length"),
    "header-not-json": (assemble(good_entries(), header_bytes=lambda b: b"{" + b"x" * (len(b) - 1)), r"not JSON"),
    "header-not-utf8": (assemble(good_entries(), header_bytes=lambda b: b"{\xff\xfe" + b[3:]), r"not UTF-8"),
    "header-is-a-list": (
        assemble(good_entries(), header_bytes=lambda b: b"[1, 2]" + b" " * (len(b) - 6)),
        r"'\{'|not an object",
    ),
    "header-nested-deeply": (assemble(good_entries(), header_bytes=nested(100_000)), r"nests too deeply|entry|dtype"),
    "tensor-named-twice": (assemble(good_entries(), header_bytes=repeat_first_tensor), r"names it twice"),
    "metadata-not-an-object": (assemble(good_entries(), metadata=["a"]), r"__metadata__"),
    "metadata-value-a-number": (assemble(good_entries(), metadata={"ss_network_dim": 4}), r"metadata 'ss_network_dim'"),
    "entry-without-offsets": (
        assemble(good_entries(), edit=lambda h: h[UP].pop("data_offsets")),
        rf"{UP}.*data_offsets",
    ),
    "entry-with-extra-key": (assemble(good_entries(), edit=entry(UP, extra=1)), rf"{UP}.*exactly"),
    "entry-not-an-object": (assemble(good_entries(), edit=lambda h: h.update({UP: "F32"})), rf"{UP}"),
    "unknown-dtype": (assemble(good_entries(), edit=entry(UP, dtype="F12")), rf"{UP}.*unknown dtype"),
    "shape-negative": (assemble(good_entries(), edit=entry(UP, shape=[-8, -4])), rf"{UP}.*shape"),
    "shape-float": (assemble(good_entries(), edit=entry(UP, shape=[8.0, 4])), rf"{UP}.*shape"),
    "shape-text": (assemble(good_entries(), edit=entry(UP, shape="8x4")), rf"{UP}.*shape"),
    "shape-bool": (assemble(good_entries(), edit=entry(UP, shape=[True, 4])), rf"{UP}.*shape"),
    "offsets-negative": (assemble(good_entries(), edit=entry(DOWN, data_offsets=[-128, 0])), rf"{DOWN}.*data_offsets"),
    "offsets-reversed": (assemble(good_entries(), edit=entry(DOWN, data_offsets=[128, 0])), rf"{DOWN}.*end before"),
    "offsets-one-number": (assemble(good_entries(), edit=entry(DOWN, data_offsets=[0])), rf"{DOWN}.*data_offsets"),
    "offsets-beyond-the-data": (
        assemble(good_entries(), edit=entry(ALPHA, data_offsets=[300, 304])),
        rf"{ALPHA}.*beyond",
    ),
    "file-truncated": (assemble(good_entries())[:-3], r"beyond|truncated"),
    "tensors-overlap": (assemble(good_entries(), edit=entry(UP, data_offsets=[64, 192]), tail=b""), r"overlap|bytes"),
    "gap-between-tensors": (
        assemble(
            good_entries(),
            edit=lambda h: (h[UP].update(data_offsets=[132, 260]), h[ALPHA].update(data_offsets=[260, 264])),
            tail=b"\0" * 4,
        ),
        r"belong to no tensor",
    ),
    "bytes-after-the-last-tensor": (assemble(good_entries(), tail=b"\0" * 16), r"after the last tensor"),
    "shape-disagrees-with-bytes": (assemble(replaced(UP, "F32", [8, 5], f32(8, 4))), rf"{UP}.*bytes"),
    "dtype-disagrees-with-bytes": (assemble(replaced(UP, "F16", [8, 4], f32(8, 4))), rf"{UP}.*bytes"),
    "up-down-rank-mismatch": (assemble(replaced(UP, "F32", [8, 3], f32(8, 3))), rf"{UP}.*rank 3.*rank 4"),
    "rank-zero": (
        assemble([(DOWN, "F32", [0, 8], b""), (UP, "F32", [8, 0], b""), (ALPHA, "F32", [], struct.pack("<f", 1.0))]),
        rf"{DOWN}.*rank 0",
    ),
    "integer-weights": (assemble(replaced(DOWN, "I32", [4, 8], f32(4, 8))), rf"{DOWN}.*floating point"),
    "weight-3d": (assemble(replaced(DOWN, "F32", [4, 8, 1], f32(4, 8))), rf"{DOWN}.*matrix"),
    "alpha-a-vector": (assemble(replaced(ALPHA, "F32", [2], struct.pack("<ff", 4.0, 4.0))), rf"{ALPHA}.*one number"),
    "alpha-nan": (assemble(replaced(ALPHA, "F32", [], struct.pack("<f", float("nan")))), rf"{ALPHA}.*nan"),
    "alpha-infinite": (assemble(replaced(ALPHA, "F32", [], struct.pack("<f", float("inf")))), rf"{ALPHA}.*inf"),
    "alpha-an-integer": (assemble(replaced(ALPHA, "I32", [], struct.pack("<i", 4))), rf"{ALPHA}.*floating-point"),
    "down-without-up": (assemble([e for e in good_entries() if e[0] != UP]), rf"{DOWN}.*without its up"),
    "up-without-down": (assemble([e for e in good_entries() if e[0] != DOWN]), rf"{UP}.*without its down"),
    "peft-metadata-not-json": (
        assemble(diffusers_entries(), {"lora_adapter_metadata": "{not json"}),
        r"lora_adapter_metadata.*not JSON",
    ),
    "peft-alpha-text": (
        assemble(diffusers_entries(), {"lora_adapter_metadata": json.dumps({"unet.lora_alpha": "four"})}),
        r"unet\.lora_alpha",
    ),
    "peft-alpha-pattern-a-list": (
        assemble(diffusers_entries(), {"lora_adapter_metadata": json.dumps({"unet.alpha_pattern": [1, 2]})}),
        r"unet\.alpha_pattern",
    ),
    "peft-rank-nan": (
        assemble(diffusers_entries(), {"lora_adapter_metadata": '{"unet.r": NaN}'}),
        r"unet\.r",
    ),
    "not-a-lora-at-all": (
        assemble([("model.diffusion_model.input_blocks.0.0.weight", "F32", [4, 8], f32(4, 8))]),
        r"not a LoRA|no LoRA weights",
    ),
}

# Broken at the level of the file format: the safetensors library refuses these too (checked below, so our rules
# are never looser than the library's).
FORMAT_LEVEL = {
    "empty-file", "five-bytes", "header-longer-than-file", "header-length-zero", "header-length-2^63",
    "header-not-json", "header-not-utf8", "header-is-a-list", "metadata-value-a-number",
    "entry-without-offsets", "unknown-dtype", "shape-negative", "shape-text", "offsets-negative",
    "offsets-reversed", "offsets-beyond-the-data", "file-truncated", "tensors-overlap", "gap-between-tensors",
    "bytes-after-the-last-tensor", "shape-disagrees-with-bytes", "dtype-disagrees-with-bytes",
}  # fmt: skip


def broken_file(content: bytes) -> Setup:
    return lambda world: (world.inputs / "lora.safetensors").write_bytes(content)


def no_output(world: World, result: Result) -> None:
    leftovers = [p.name for p in world.out.iterdir()]
    assert not leftovers, f"a refused convert wrote {leftovers}"


INSPECT = ["inspect", "{in}/lora.safetensors"]
CONVERT = ["convert", "{in}/lora.safetensors", "{out}/out.safetensors", "--to", "diffusers"]
CONVERT_BACK = ["convert", "{in}/lora.safetensors", "{out}/out.safetensors", "--to", "kohya"]


def broken_cases() -> list[Case]:
    cases = []
    for kind, (content, says) in BROKEN.items():
        convert = CONVERT_BACK if kind.startswith("peft") else CONVERT
        cases.append(Case(f"inspect-{kind}", INSPECT, 2, says, broken_file(content)))
        cases.append(Case(f"convert-{kind}", convert, 2, says, broken_file(content), no_output))
    return cases


def spaced_header(world: World) -> None:
    """Whitespace before the header's JSON: odd, but the safetensors library reads it, so we do too."""
    content = assemble(good_entries(), header_bytes=lambda b: b"\n  " + b)
    (world.inputs / "lora.safetensors").write_bytes(content)


def valid_lora(world: World) -> None:
    (world.inputs / "lora.safetensors").write_bytes(assemble(good_entries(), {"note": "[/] [bold]not markup[/bold]"}))


def library_reads_output(world: World, result: Result) -> None:
    from safetensors import safe_open

    with safe_open(str(world.out / "out.safetensors"), "np") as f:
        assert sorted(f.keys()) == [
            "unet.down_blocks.0.attentions.0.proj_in.lora_A.weight",
            "unet.down_blocks.0.attentions.0.proj_in.lora_B.weight",
        ]
        assert f.metadata()["note"] == "[/] [bold]not markup[/bold]"


def previous_output_kept(world: World, result: Result) -> None:
    assert (world.out / "out.safetensors").read_bytes() == b"the previous file, which must survive"
    assert [p.name for p in world.out.iterdir() if p.name != ".filler"] == ["out.safetensors"], "a temp file is left"


def valid_lora_and_previous_output(world: World) -> None:
    valid_lora(world)
    (world.out / "out.safetensors").write_bytes(b"the previous file, which must survive")


def nothing_on_disk(world: World, result: Result) -> None:
    assert [p.name for p in world.out.iterdir() if p.name != ".filler"] == [], "a partial file is left"


CASES = [
    *broken_cases(),
    Case("inspect-missing-file", ["inspect", "{in}/nope.safetensors"], 2, r"nope\.safetensors does not exist"),
    Case("inspect-a-folder", ["inspect", "{in}"], 2, r"is a folder.*fix"),
    Case("inspect-header-with-leading-space", INSPECT, 0, r"rank\s+4", spaced_header),
    Case("inspect-markup-in-metadata", INSPECT, 0, r"\[/\] \[bold\]not markup", valid_lora),
    Case("convert-valid-the-library-reads-it", CONVERT, 0, r"wrote", valid_lora, library_reads_output),
    Case("convert-onto-itself", ["convert", "{in}/lora.safetensors", "{in}/lora.safetensors", "--to", "diffusers"], 2, r"overwrite the input", valid_lora),
    Case("convert-into-a-missing-folder", ["convert", "{in}/lora.safetensors", "{out}/no/such/out.safetensors", "--to", "diffusers"], 2, r"folder .*no/such does not exist.*fix", valid_lora),
    Case("convert-onto-a-folder", ["convert", "{in}/lora.safetensors", "{out}", "--to", "diffusers"], 2, r"is a folder.*fix", valid_lora),
    Case("convert-unknown-target-format", ["convert", "{in}/lora.safetensors", "{out}/o.safetensors", "--to", "lycoris"], 2, r"invalid choice", valid_lora),
    Case("convert-disk-full", CONVERT, 1, r"no space left.*out\.safetensors.*fix", valid_lora, nothing_on_disk, disk="full"),
    Case("convert-disk-full-keeps-the-old-file", CONVERT, 1, r"no space left.*fix", valid_lora_and_previous_output, previous_output_kept, disk="full"),
    Case("convert-read-only-folder", CONVERT, 1, r"read-only.*out\.safetensors.*fix", valid_lora, nothing_on_disk, disk="ro"),
]  # fmt: skip


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_lora(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)


@pytest.mark.parametrize("kind", sorted(FORMAT_LEVEL))
def test_the_safetensors_library_refuses_what_we_refuse_as_broken(kind: str, tmp_path: Path) -> None:
    """Our format rules are the library's (never looser): each file refused above as broken, the library refuses."""
    from safetensors import safe_open

    path = tmp_path / "lora.safetensors"
    path.write_bytes(BROKEN[kind][0])
    with pytest.raises(Exception), safe_open(str(path), "np") as f:  # noqa: B017, PT011 - any refusal will do
        f.keys()
