"""Hostile photos, zips and output folders through `loraforge prep`: a bad file is reported like any bad photo and the
rest go on; a bad request is one line naming the file and the fix; the source, and files prep did not write, are
never touched; a failing disk leaves no poisoned cache behind."""

from __future__ import annotations

import functools
import io
import json
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from test_hostile_harness import Case, Result, Setup, World, image, params, run_case, run_cli

PREP = ["prep", "{in}/photos", "-o", "{out}/ds", "--subject", "object", "--size", "256", "--workers", "1"]
PREP_ZIP = ["prep", "{in}/photos.zip", "-o", "{out}/ds", "--subject", "object", "--size", "256", "--workers", "1"]


def photo_bytes(seed: int, size: tuple[int, int] = (320, 320)) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def photos(folder: Path, count: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"good{i}.jpg").write_bytes(photo_bytes(i))


def folder_with(build: Callable[[Path], None], count: int = 3) -> Setup:
    """Setup: ``in/photos`` with ``count`` good photos, then whatever ``build`` adds."""

    def setup(world: World) -> None:
        photos(world.inputs / "photos", count)
        build(world.inputs / "photos")

    return setup


def prepared(count: int, *refused: str) -> Callable[[World, Result], None]:
    """Check: ``count`` images in the dataset, and each named file reported as refused (with its reason)."""

    def check(world: World, result: Result) -> None:
        manifest = json.loads((world.out / "ds" / "manifest.json").read_text(encoding="utf-8"))
        entries = manifest["entries"] if isinstance(manifest, dict) and "entries" in manifest else manifest
        text = json.dumps(entries, ensure_ascii=False)
        images = [
            p for p in (world.out / "ds").iterdir() if p.suffix in (".jpg", ".png") and not p.name.startswith(".")
        ]
        assert len(images) == count, f"{len(images)} images prepared, expected {count}"
        for name in refused:
            assert name in text or name in result.text, f"{name} is not reported"

    return check


# --- zips --------------------------------------------------------------------------------------------------------


def zip_of(members: list[tuple[str | zipfile.ZipInfo, bytes]], patch: Callable[[bytes], bytes] | None = None) -> Setup:
    """Setup: ``in/photos.zip`` holding three good photos and ``members``, its bytes then given to ``patch``."""

    def setup(world: World) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for i in range(3):
                zf.writestr(f"good{i}.jpg", photo_bytes(i))
            for name, data in members:
                zf.writestr(name, data)
        raw = buffer.getvalue()
        (world.inputs / "photos.zip").write_bytes(patch(raw) if patch else raw)

    return setup


def stored(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    return info


def set_encrypted(name: bytes) -> Callable[[bytes], bytes]:
    """Patch a member's "encrypted" flag on in its local and central headers (zipfile cannot write encryption; the
    flag is what a reader goes by)."""

    def patch(raw: bytes) -> bytes:
        data = bytearray(raw)
        for signature, flag_at, name_len_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
            start = 0
            while (at := data.find(signature, start)) >= 0:
                length = struct.unpack_from("<H", data, at + name_len_at)[0]
                if bytes(data[at + name_at : at + name_at + length]) == name:
                    data[at + flag_at] |= 0x01
                start = at + 4
        return bytes(data)

    return patch


def set_method(name: bytes, method: int) -> Callable[[bytes], bytes]:
    """Patch a member's compression method in its local and central headers (9 = Deflate64, 99 = AES)."""

    def patch(raw: bytes) -> bytes:
        data = bytearray(raw)
        for signature, method_at, name_len_at, name_at in ((b"PK\x03\x04", 8, 26, 30), (b"PK\x01\x02", 10, 28, 46)):
            start = 0
            while (at := data.find(signature, start)) >= 0:
                length = struct.unpack_from("<H", data, at + name_len_at)[0]
                if bytes(data[at + name_at : at + name_at + length]) == name:
                    struct.pack_into("<H", data, at + method_at, method)
                start = at + 4
        return bytes(data)

    return patch


def corrupt_data(name: bytes) -> Callable[[bytes], bytes]:
    """Flip bytes inside a stored member's data: its CRC no longer matches."""

    def patch(raw: bytes) -> bytes:
        data = bytearray(raw)
        at = _local_header(data, name)
        length, extra = struct.unpack_from("<HH", data, at + 26)
        body = at + 30 + length + extra
        for i in range(body + 100, body + 140):
            data[i] ^= 0xFF
        return bytes(data)

    return patch


def lying_size(name: bytes) -> Callable[[bytes], bytes]:
    """The central directory says the member unpacks to 10 bytes; it unpacks to far more."""

    def patch(raw: bytes) -> bytes:
        data = bytearray(raw)
        at = data.find(b"PK\x01\x02")
        while at >= 0:
            length = struct.unpack_from("<H", data, at + 28)[0]
            if bytes(data[at + 46 : at + 46 + length]) == name:
                struct.pack_into("<I", data, at + 24, 10)
            at = data.find(b"PK\x01\x02", at + 4)
        return bytes(data)

    return patch


def _local_header(data: bytearray, name: bytes) -> int:
    at = data.find(b"PK\x03\x04")
    while at >= 0:
        length = struct.unpack_from("<H", data, at + 26)[0]
        if bytes(data[at + 30 : at + 30 + length]) == name:
            return at
        at = data.find(b"PK\x03\x04", at + 4)
    raise AssertionError(f"no member {name!r}")


@functools.cache
def bomb_zip() -> bytes:
    """A 2.3 MB zip holding one 2 GiB entry of zeros (and three good photos). Deflate settles into a steady state on
    zeros, so the compressed stream of 128 blocks of 16 MiB is the first block's output, then the second's 127 times,
    then the flush: built in a second instead of compressing 2 GiB."""
    block = bytes(1 << 24)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    first, steady = compressor.compress(block), compressor.compress(block)
    assert compressor.compress(block) == steady, "deflate did not settle: build the bomb the slow way"
    stream = first + steady * 127 + compressor.flush()
    crc = 0
    for _ in range(128):
        crc = zlib.crc32(block, crc)
    members = [(f"good{i}.jpg", zipfile.ZIP_STORED, photo_bytes(i)) for i in range(3)]
    entries = [(name, method, zlib.crc32(data), data, len(data)) for name, method, data in members]
    entries.append(("huge.png", zipfile.ZIP_DEFLATED, crc, stream, 128 << 24))
    return raw_zip(entries)


def raw_zip(entries: list[tuple[str, int, int, bytes, int]]) -> bytes:
    """A zip from (name, method, crc, compressed bytes, uncompressed size) members, written by hand."""
    local, central = bytearray(), bytearray()
    for name, method, crc, data, size in entries:
        raw_name = name.encode()
        fields = struct.pack("<HHHHHIIIHH", 20, 0, method, 0, 0x21, crc, len(data), size, len(raw_name), 0)
        central += b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHII", 0, 0, 0, 0, len(local))
        central += raw_name
        local += b"PK\x03\x04" + fields + raw_name + data
    end = struct.pack("<HHHHIIH", 0, 0, len(entries), len(entries), len(central), len(local), 0)
    return bytes(local + central + b"PK\x05\x06" + end)


def the_bomb(world: World) -> None:
    (world.inputs / "photos.zip").write_bytes(bomb_zip())


def many_members(world: World) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for i in range(20_001):
            zf.writestr(f"f{i}.txt", b"")
    (world.inputs / "photos.zip").write_bytes(buffer.getvalue())


def symlink_member(world: World) -> None:
    info = zipfile.ZipInfo("link.jpg")
    info.external_attr = (0o120777 << 16) | 0x20  # a Unix symlink to /etc/passwd
    zip_of([(info, b"/etc/passwd")])(world)


def nothing_escaped(world: World, result: Result) -> None:
    for path in (world.root / "evil.png", world.out / "evil.png", Path("/tmp/loraforge-hostile-evil.png")):
        assert not path.exists(), f"a zip member escaped to {path}"


# --- photos ------------------------------------------------------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def non_utf8_names(folder: Path) -> None:
    for i, raw in enumerate([b"caf\xe9.jpg", b"\xff\xfe-photo.jpg", b"\x80\x81.JPG"]):
        (folder / os.fsdecode(raw)).write_bytes(photo_bytes(20 + i))


def a_bomb(folder: Path) -> None:
    (folder / "bomb.png").write_bytes(png_claiming(100_000, 100_000))


def truncated(folder: Path) -> None:
    (folder / "cut.jpg").write_bytes(photo_bytes(7)[:900])


def zero_bytes(folder: Path) -> None:
    (folder / "empty.jpg").write_bytes(b"")


def text_as_png(folder: Path) -> None:
    (folder / "notes.png").write_text("this is not an image")


def symlink_loop(folder: Path) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)


def broken_symlink(folder: Path) -> None:
    (folder / "gone.jpg").symlink_to(folder / "nowhere.jpg")


def tiny_image(folder: Path) -> None:
    image(folder / "tiny.png", size=(8, 8))


def extreme_aspect(folder: Path) -> None:
    image(folder / "strip.png", size=(2000, 20))


def caption_not_utf8(folder: Path) -> None:
    (folder / "good0.txt").write_bytes("caf\xe9 latin-1".encode("latin-1"))


def cmyk_and_16bit(folder: Path) -> None:
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(3).random((300, 300))
    Image.open(io.BytesIO(photo_bytes(30))).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((noise * 65535).astype("uint16")).save(folder / "deep.png")


def animated_gif(folder: Path) -> None:
    from PIL import Image

    frames = [Image.open(io.BytesIO(photo_bytes(40 + i))) for i in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])


def fifo(folder: Path) -> None:
    """A named pipe called pipe.jpg: opening it blocks until someone writes. A thread opens it for writing after
    12 s so that a reader stuck on it (the bug) is released after the case has failed, leaving no stuck process."""
    import threading
    import time

    path = folder / "pipe.jpg"
    os.mkfifo(path)

    def release() -> None:
        deadline = time.monotonic() + 30
        time.sleep(12)
        while time.monotonic() < deadline and path.exists():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader (any more): nothing to release
                time.sleep(0.5)

    threading.Thread(target=release, daemon=True).start()


# --- output folders ----------------------------------------------------------------------------------------------


def foreign_manifest(schema: object) -> Setup:
    """Setup: good photos, and an -o folder holding someone else's manifest.json naming someone else's files."""

    def setup(world: World) -> None:
        photos(world.inputs / "photos")
        out = world.inputs / "theirs"
        out.mkdir()
        (out / "thesis.pdf").write_bytes(b"%PDF- years of work")
        (out / "manifest.json").write_text(json.dumps(schema))

    return setup


PREP_INTO_THEIRS = [
    "prep",
    "{in}/photos",
    "-o",
    "{in}/theirs",
    "--subject",
    "object",
    "--size",
    "256",
    "--workers",
    "1",
]


def input_inside_output(world: World) -> None:
    photos(world.inputs / "ds" / "photos")


def prep_again_works(world: World, result: Result) -> None:
    """After a failure on a full disk, the same photos prepare into another folder: no cache entry was poisoned."""
    again = run_cli([a.replace("{in}", str(world.inputs)).replace("{out}", str(world.root / "again")) for a in PREP])
    assert again.code == 0 and "Traceback" not in again.text, again.text
    assert len(list((world.root / "again" / "ds").glob("*.jpg"))) == 3


def poisoned_cache(world: World) -> None:
    """Zero-byte and garbage entries everywhere in loraforge's cache folder, as a disk-full prep could leave."""
    photos(world.inputs / "photos")
    cache = world.home / "cache" / "prep"
    for sub in ("", "ab", "cd/ef"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
        (cache / sub / "entry.json").write_bytes(b"")
        (cache / sub / "entry.png").write_bytes(b"\x89PNG torn")
    # and a torn copy of every entry a real prep would write
    out = run_cli([a.replace("{in}", str(world.inputs)).replace("{out}", str(world.root / "warm")) for a in PREP])
    assert out.code == 0, out.text
    for path in (world.home / "cache").rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def read_only_home(world: World) -> None:
    photos(world.inputs / "photos")


CASES = [
    # --- zips
    Case("zip-absolute-member", PREP_ZIP, 0, r"absolute path", zip_of([("/tmp/loraforge-hostile-evil.png", photo_bytes(5))]), nothing_escaped),
    Case("zip-escaping-member", PREP_ZIP, 0, r"outside the target", zip_of([("../../evil.png", photo_bytes(5))]), nothing_escaped),
    Case("zip-backslash-escape", PREP_ZIP, 0, r"accepted", zip_of([("..\\..\\evil.png", photo_bytes(5))]), nothing_escaped),
    Case("zip-encrypted-member", PREP_ZIP, 0, r"encrypted", zip_of([(stored("secret.jpg"), photo_bytes(5))], set_encrypted(b"secret.jpg")), prepared(3, "secret.jpg")),
    Case("zip-deflate64-member", PREP_ZIP, 0, r"method 9", zip_of([(stored("d64.jpg"), photo_bytes(5))], set_method(b"d64.jpg", 9)), prepared(3, "d64.jpg")),
    Case("zip-aes-member", PREP_ZIP, 0, r"method 99", zip_of([(stored("aes.jpg"), photo_bytes(5))], set_method(b"aes.jpg", 99)), prepared(3, "aes.jpg")),
    Case("zip-file-folder-clash", PREP_ZIP, 0, r"clashes", zip_of([("a.jpg", photo_bytes(5)), ("a.jpg/b.jpg", photo_bytes(6))]), prepared(4)),
    Case("zip-corrupt-member", PREP_ZIP, 0, r"corrupt", zip_of([(stored("bad.jpg"), photo_bytes(5))], corrupt_data(b"bad.jpg")), prepared(3, "bad.jpg")),
    Case("zip-lying-size", PREP_ZIP, 0, r"corrupt|more data", zip_of([(stored("liar.jpg"), photo_bytes(5))], lying_size(b"liar.jpg")), prepared(3, "liar.jpg")),
    Case("zip-2gib-entry-bomb", PREP_ZIP, 0, r"decompression bomb|larger than any photo", the_bomb, prepared(3, "huge.png")),
    Case("zip-too-many-members", PREP_ZIP, 2, r"20001 files.*at most 20000", many_members),
    Case("zip-not-a-zip", PREP_ZIP, 2, r"photos\.zip is not a readable \.zip", lambda w: (w.inputs / "photos.zip").write_text("hello")),
    Case("zip-empty-archive", PREP_ZIP, 1, r"no usable images", lambda w: zipfile.ZipFile(w.inputs / "photos.zip", "w").close()),
    Case("zip-symlink-member", PREP_ZIP, 0, r"accepted", symlink_member, nothing_escaped),
    Case("zip-nested-zip", PREP_ZIP, 0, r"not an image", zip_of([("inner.zip", b"PK\x05\x06" + bytes(18))]), prepared(3)),
    Case("zip-non-utf8-names", PREP_ZIP, 0, r"accepted", zip_of([(stored("caf\xe9.jpg"), photo_bytes(8))]), prepared(4)),
    Case("zip-truncated-archive", PREP_ZIP, 2, r"not a readable \.zip", zip_of([], lambda raw: raw[: len(raw) // 2])),
    # --- photos
    Case("photos-missing", ["prep", "{in}/nothere", "-o", "{out}/ds"], 2, r"nothere.*(does not exist|not found)"),
    Case("photos-a-plain-file", ["prep", "{in}/notes.txt", "-o", "{out}/ds"], 2, r"notes\.txt", lambda w: (w.inputs / "notes.txt").write_text("x")),
    Case("photos-empty-folder", PREP, 1, r"no usable images", lambda w: (w.inputs / "photos").mkdir()),
    Case("photos-non-utf8-names", PREP, 0, r"accepted", folder_with(non_utf8_names), prepared(6)),
    Case("photos-decompression-bomb", PREP, 0, r"bomb\.png", folder_with(a_bomb), prepared(3, "bomb.png")),
    Case("photos-truncated-jpeg", PREP, 0, r"cut\.jpg", folder_with(truncated), prepared(3, "cut.jpg")),
    Case("photos-zero-byte-file", PREP, 0, r"empty\.jpg", folder_with(zero_bytes), prepared(3, "empty.jpg")),
    Case("photos-text-named-png", PREP, 0, r"notes\.png", folder_with(text_as_png), prepared(3, "notes.png")),
    Case("photos-symlink-loop", PREP, 0, r"accepted", folder_with(symlink_loop), prepared(3)),
    Case("photos-broken-symlink", PREP, 0, r"gone\.jpg", folder_with(broken_symlink), prepared(3, "gone.jpg")),
    Case("photos-too-small", PREP, 0, r"tiny\.png", folder_with(tiny_image), prepared(3, "tiny.png")),
    Case("photos-extreme-aspect", PREP, 0, r"strip\.png", folder_with(extreme_aspect), prepared(3, "strip.png")),
    Case("photos-a-fifo", PREP, 0, r"pipe\.jpg", folder_with(fifo), prepared(3, "pipe.jpg"), deadline_s=8),
    Case("photos-caption-not-utf8", PREP, 0, r"accepted", folder_with(caption_not_utf8), prepared(3)),
    Case("photos-cmyk-and-16-bit", PREP, 0, r"accepted", folder_with(cmyk_and_16bit), prepared(5)),
    Case("photos-animated-gif", PREP, 0, r"anim\.gif", folder_with(animated_gif), prepared(4)),
    # --- flags
    Case("size-not-a-multiple-of-64", [*PREP[:-4], "--size", "100"], 2, r"--size.*64", folder_with(lambda f: None)),
    Case("size-negative", [*PREP[:-4], "--size", "-64"], 2, r"--size", folder_with(lambda f: None)),
    Case("workers-zero-means-the-default", [*PREP[:-2], "--workers", "0"], 0, r"accepted", folder_with(lambda f: None), prepared(3)),
    # --- the output folder
    Case("out-holds-a-foreign-manifest", PREP_INTO_THEIRS, 2, r"manifest\.json.*(not|another)", foreign_manifest({"entries": [{"output": "thesis.pdf"}]})),
    Case("out-holds-a-manifest-of-another-schema", PREP_INTO_THEIRS, 2, r"manifest\.json", foreign_manifest(["thesis.pdf", 42, None])),
    Case("out-holds-a-forged-looking-manifest", PREP_INTO_THEIRS, 2, r"manifest\.json", foreign_manifest({"loraforge": "prep", "entries": [{"output": "thesis.pdf", "verdict": "accepted"}]})),
    Case("input-inside-out", ["prep", "{in}/ds/photos", "-o", "{in}/ds", "--subject", "object"], 2, r"inside", input_inside_output),
    Case("out-is-the-input", ["prep", "{in}/photos", "-o", "{in}/photos", "--subject", "object"], 2, r"inside|same", folder_with(lambda f: None)),
    Case("out-is-a-file", ["prep", "{in}/photos", "-o", "{in}/photos/good0.jpg", "--subject", "object"], (1, 2), r"good0\.jpg.*fix", folder_with(lambda f: None)),
    Case("out-read-only", PREP, 1, r"read-only.*fix", folder_with(lambda f: None), disk="ro"),
    Case("out-disk-full", PREP, 1, r"no space left.*fix", folder_with(lambda f: None), prep_again_works, disk="full"),
    Case("cache-poisoned-by-torn-entries", PREP, 0, r"accepted", poisoned_cache, prepared(3)),
    Case("home-is-a-file", PREP, (0, 1, 2), r"accepted|LORAFORGE_HOME|home", read_only_home, env={"LORAFORGE_HOME": "{in}/photos/good0.jpg"}),
]  # fmt: skip


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_prep(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)


# Runs `loraforge prep` and prints its peak memory (KiB) and exit status. A child's ru_maxrss starts from the memory
# of the process that forked it (Linux keeps the pre-exec high-water mark), so prep is started from this small
# process rather than from pytest, which may have grown to hundreds of MB by then.
MEASURE = """
import os, sys
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
argv = [sys.executable, "-m", "orchestrator.cli", *sys.argv[2:]]
pid = os.posix_spawn(sys.executable, argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2)])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def test_prep_of_a_2_mb_zip_holding_a_2_gib_entry_stays_under_500_mb(tmp_path: Path) -> None:
    """Peak memory (ru_maxrss of a child `loraforge prep`, its worker processes included) on the 2 GiB bomb: the entry
    is refused from its header and nothing is read whole, so the process stays the size of an ordinary prep."""
    import subprocess
    import sys

    archive = tmp_path / "photos.zip"
    archive.write_bytes(bomb_zip())
    assert archive.stat().st_size < 3 * 1024**2
    log = tmp_path / "out.log"
    prep = ["prep", str(archive), "-o", str(tmp_path / "ds"), "--subject", "object", "--size", "256"]
    measured = subprocess.run(
        [sys.executable, "-c", MEASURE, str(log), *prep], capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert measured.returncode == 0, measured.stderr
    peak_kib, code = (int(n) for n in measured.stdout.split())
    output = log.read_text()
    peak_mb = peak_kib / 1024
    print(f"prep peak memory on a {archive.stat().st_size / 1024**2:.1f} MB zip with a 2 GiB entry: {peak_mb:.0f} MB")
    assert code == 0, output
    assert "huge.png" in output and len(list((tmp_path / "ds").glob("*.jpg"))) == 3
    assert peak_mb < 500, f"prep peaked at {peak_mb:.0f} MB"
