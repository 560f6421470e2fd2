"""The harness of the hostile-input corpus (tests/unit/test_hostile_*.py): one table row per case, run against the
real CLI in-process, with the same checks for every case:

- the exit status is the documented one (0 done, 1 the run or the world failed, 2 bad input, 130 interrupted) and the
  output says what the case expects (a message naming the file and the fix, or the right result);
- no traceback, ever ("Traceback" appears in no output);
- no hang: each case has a deadline (SIGALRM), after which it fails;
- nothing changed or lost outside the output: every file and folder under the case's inputs is hashed (names,
  types, modes, contents, link targets) before and after;
- no secret anywhere: SECRET, planted in inputs that carry secrets, appears in no output and in no file written
  (everything under the case's folder except its inputs, and loraforge's home).

A case's output folder can sit on a small tmpfs that is full or read-only (root only: CI runs as root; elsewhere those
cases skip with the reason). This module holds no tests of its own.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import resource
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SECRET = "lfsecret-7Qz9XwV3kP2m"  # planted wherever a case's input carries a secret
DEADLINE_S = 60  # per case; the slowest case (a 2 GiB zip entry refused) takes a few seconds
MEMORY_CAP = 3 * 1024**3  # address space a case may add (prep's worker processes inherit the cap)


@dataclass
class World:
    """Where one case lives: ``inputs`` (must not change), ``out`` (where output may go), loraforge's ``home``."""

    root: Path
    inputs: Path
    out: Path
    home: Path

    def path(self, text: str) -> str:
        return text.replace("{in}", str(self.inputs)).replace("{out}", str(self.out)).replace("{root}", str(self.root))


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


Setup = Callable[[World], None]
Check = Callable[[World, Result], None]


@dataclass(frozen=True)
class Case:
    """One hostile input or failing environment.

    ``argv`` may name ``{in}``, ``{out}`` and ``{root}``. ``code``: the exit statuses allowed. ``says``: a regular
    expression the output must match (what went wrong in the user's terms, the file, the fix). ``disk``: put
    ``out`` on a tmpfs that is "full" or "ro" (read-only) once ``setup`` has run. ``check``: more to verify.
    ``xfail``: "<owner>: <what>" for a case whose fix belongs to another lane (strict: it must fail today).
    """

    id: str
    argv: list[str]
    code: int | tuple[int, ...]
    says: str | None = None
    setup: Setup | None = None
    check: Check | None = None
    disk: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    xfail: str | None = None
    deadline_s: int = DEADLINE_S

    def __post_init__(self) -> None:
        codes = self.code if isinstance(self.code, tuple) else (self.code,)
        assert self.says is not None or codes == (0,), f"{self.id}: a failing case must say what the message says"

    def param(self):  # type: ignore[no-untyped-def]
        marks = [pytest.mark.xfail(strict=True, reason=self.xfail)] if self.xfail else []
        return pytest.param(self, id=self.id, marks=marks)


def params(cases: list[Case]) -> list:  # type: ignore[type-arg]
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return [c.param() for c in cases]


class Hang(BaseException):
    """Raised by the deadline alarm; a BaseException so the CLI's error boundary cannot swallow it."""


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def memory_cap(extra_bytes: int = MEMORY_CAP) -> Iterator[None]:
    """At most ``extra_bytes`` more address space while the block runs: a case that would expand a bomb in memory
    fails with MemoryError (a traceback the checks catch) instead of taking down a machine shared with others."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    in_use = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    cap = in_use + extra_bytes if hard == resource.RLIM_INFINITY else min(hard, in_use + extra_bytes)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_cli(argv: list[str], seconds: int = DEADLINE_S) -> Result:
    """``loraforge ARGV`` in this process, its output captured, under a deadline and a memory cap."""
    from orchestrator.cli import main

    out, err = io.StringIO(), io.StringIO()
    with deadline(seconds), memory_cap(), redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return Result(code, out.getvalue(), err.getvalue())


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (root included): its type, mode and content hash or link target."""
    entries: dict[str, str] = {}
    if not os.path.lexists(root):
        return entries
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = Path(folder) / name if name != "." else Path(folder)
            key = os.fsdecode(os.path.relpath(path, root))
            info = path.lstat()
            kind = stat.S_IFMT(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                detail = ""
            entries[key] = f"{kind:o} {stat.S_IMODE(info.st_mode):o} {detail}"
    return entries


def files_holding(root: Path, needle: bytes, skip: Path | None = None) -> list[Path]:
    """Files under ``root`` (not under ``skip``) whose bytes contain ``needle``."""
    found = []
    for folder, _dirs, files in os.walk(root):
        if skip is not None and Path(folder).is_relative_to(skip):
            continue
        for name in files:
            path = Path(folder) / name
            try:
                if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


# --- small disks ------------------------------------------------------------------------------------------------


def can_mount() -> str | None:
    """None when a tmpfs can be mounted here, else why not."""
    return None if os.geteuid() == 0 else "mounting a tmpfs needs root (CI runs as root)"


@contextmanager
def tmpfs(folder: Path, size: str = "2m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``folder`` (created); unmounted however the block ends."""
    why = can_mount()
    if why:
        pytest.skip(why)
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the file system under ``folder`` to the last byte (big writes, then smaller ones for what is left)."""
    with (folder / ".filler").open("wb", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                continue


def read_only(folder: Path) -> None:
    """Remount ``folder`` (a tmpfs mounted by :func:`tmpfs`) read-only: chmod does not stop root, this does."""
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)


# --- running one case -------------------------------------------------------------------------------------------


def run_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Result:
    world = World(root=tmp_path, inputs=tmp_path / "in", out=tmp_path / "out", home=Path(os.environ["LORAFORGE_HOME"]))
    world.inputs.mkdir()
    for key, value in case.env.items():
        monkeypatch.setenv(key, world.path(value))
    with tmpfs(world.out) if case.disk else _plain_folder(world.out):
        if case.setup is not None:
            case.setup(world)
        before = snapshot(world.inputs)
        if case.disk == "full":
            fill(world.out)
        elif case.disk == "ro":
            read_only(world.out)
        monkeypatch.chdir(world.out if case.disk is None else world.root)
        result = run_cli([world.path(a) for a in case.argv], case.deadline_s)
        verify(case, world, result, before)
    return result


@contextmanager
def _plain_folder(folder: Path) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    yield folder


def verify(case: Case, world: World, result: Result, before: dict[str, str]) -> None:
    text = result.text
    allowed = case.code if isinstance(case.code, tuple) else (case.code,)
    assert "Traceback" not in text, f"a traceback:\n{text[-3000:]}"
    assert "internal error" not in text, f"an internal error:\n{text[-3000:]}"
    assert result.code in allowed, f"exit {result.code}, expected {allowed}:\n{text[-3000:]}"
    if result.code != 0:
        assert text.strip(), "a failure with no message"
    if case.says is not None:
        assert re.search(case.says, text, re.S | re.I), f"expected /{case.says}/ in:\n{text[-3000:]}"
    after = snapshot(world.inputs)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"inputs changed or lost: {changed[:10]}"
    assert SECRET not in text, "a secret in the output"
    leaked = files_holding(world.root, SECRET.encode(), skip=world.inputs) + files_holding(world.home, SECRET.encode())
    assert not leaked, f"a secret written to {leaked}"
    if case.check is not None:
        case.check(world, result)


def fresh_tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="loraforge-hostile-"))


# --- inputs the cases share --------------------------------------------------------------------------------------


def image(path: Path, seed: int = 0, size: tuple[int, int] = (64, 64), fmt: str | None = None) -> Path:
    """A small noisy RGB image (PNG unless the suffix or ``fmt`` says otherwise)."""
    import numpy as np
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def dataset(folder: Path, count: int = 4, caption: str = "ohwx person, a photo") -> Path:
    """A dataset a trainer reads: ``count`` PNGs with .txt captions holding the trigger ``ohwx person``."""
    for i in range(count):
        image(folder / f"img{i}.png", seed=i)
        (folder / f"img{i}.txt").write_text(caption, encoding="utf-8")
    return folder


JOB = """\
name: me
base_model: {model}
family: sd15
trigger: {trigger}
dataset: {dataset}
training: {{steps: 10, resolution: 512}}
"""


def job_file(world: World, extra: str = "", *, data: str | None = None, trigger: str = "ohwx person") -> Path:
    """A valid job for ``render`` (a stand-in model file, a 4-image dataset under inputs), with the settings of the
    YAML text ``extra`` merged in (so a case changes one setting without repeating a key). ``data`` (may name
    ``{in}``) points it at another dataset folder, which the case builds."""
    import yaml

    model = world.inputs / "model.safetensors"
    if not model.exists():
        model.write_bytes(b"stand-in: render never reads the model")
    folder = world.inputs / "ds"
    if data is None and not folder.exists():
        dataset(folder)
    settings = yaml.safe_load(JOB.format(model=model, dataset=world.path(data) if data else folder, trigger=trigger))
    _merge(settings, yaml.safe_load(extra) or {})
    path = world.inputs / "job.yaml"
    path.write_text(yaml.safe_dump(settings, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _merge(target: dict, source: dict) -> None:  # type: ignore[type-arg]
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
