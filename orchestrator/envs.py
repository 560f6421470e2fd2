"""Backend Python environments: where they are, which interpreter they use, and finding interpreters.

Each backend runs in its own virtual environment (their pinned stacks clash). ``loraforge setup BACKEND`` creates
one under ``$LORAFORGE_HOME/envs/BACKEND`` or registers an existing install; the registry is a small JSON file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.envshare import link_shared
from orchestrator.errors import BackendNotReady
from orchestrator.userpath import user_path


def home() -> Path:
    """loraforge's own data folder: $LORAFORGE_HOME, else $XDG_DATA_HOME/loraforge, else ~/.local/share/loraforge."""
    if os.environ.get("LORAFORGE_HOME"):
        return user_path(os.environ["LORAFORGE_HOME"])
    xdg = os.environ.get("XDG_DATA_HOME")
    return (user_path(xdg) if xdg else Path.home() / ".local" / "share") / "loraforge"


def cache_dir() -> Path:
    return home() / "cache"


@dataclass(frozen=True)
class BackendEnv:
    """A registered backend environment, and (filled by :func:`get_env`, never saved) how this run uses it."""

    backend: str
    python: Path
    root: Path | None = None  # the sd-scripts checkout for kohya; None where the backend is a package
    versions: dict[str, str] = field(default_factory=dict)
    managed: bool = False  # created by loraforge (may be recreated) or the user's own install (never touched)
    device: str = ""  # "cuda" or "cpu": what setup probed in the env's torch, or $LORAFORGE_DEVICE
    offline: bool = False  # HF_HUB_OFFLINE: nothing may be fetched from the hub

    @property
    def cpu(self) -> bool:
        return (self.device or device_of(self.versions)) == "cpu"

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["python"] = str(self.python)
        data["root"] = str(self.root) if self.root else None
        del data["device"], data["offline"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> BackendEnv:
        root = data.get("root")
        return cls(
            backend=str(data["backend"]),
            python=Path(str(data["python"])),
            root=Path(str(root)) if root else None,
            versions=dict(data.get("versions") or {}),  # type: ignore[arg-type]
            managed=bool(data.get("managed", False)),
        )


def registry_path() -> Path:
    return home() / "envs.json"


def load_registry() -> dict[str, BackendEnv]:
    path = registry_path()
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    registry: dict[str, BackendEnv] = {}
    for name, data in raw.items() if isinstance(raw, dict) else ():
        try:
            registry[name] = BackendEnv.from_json(data)
        except (TypeError, KeyError, ValueError, AttributeError):
            # a hand-edited or foreign entry: that backend reads as not set up (`loraforge setup` rewrites it)
            continue
    return registry


def save_env(env: BackendEnv) -> None:
    registry = load_registry()
    registry[env.backend] = env
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: v.to_json() for k, v in registry.items()}, indent=2), encoding="utf-8")
    tmp.replace(path)


def get_env(backend: str) -> BackendEnv:
    """The registered environment of ``backend`` with this run's device and hub access resolved, or a
    BackendNotReady error naming the setup command."""
    env = load_registry().get(backend)
    if env is None:
        raise BackendNotReady(
            f"the {backend} backend is not set up on this machine",
            f"run `loraforge setup {backend}` (or `loraforge setup {backend} --venv PATH` for an existing install)",
        )
    if not env.python.exists():
        raise BackendNotReady(
            f"the {backend} environment's interpreter {env.python} no longer exists",
            f"run `loraforge setup {backend}` again",
        )
    return resolve_runtime(env)


def resolve_runtime(env: BackendEnv, environ: dict[str, str] | None = None) -> BackendEnv:
    """The environment as this run uses it: the device ($LORAFORGE_DEVICE, or the older
    $LORAFORGE_SIMPLETUNER_DEVICE, else what setup probed) and whether the hub is off limits ($HF_HUB_OFFLINE)."""
    environ = dict(os.environ) if environ is None else environ
    override = (environ.get("LORAFORGE_DEVICE") or environ.get("LORAFORGE_SIMPLETUNER_DEVICE") or "").lower()
    device = override if override in ("cpu", "cuda") else device_of(env.versions)
    offline = environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    return replace(env, device=device, offline=offline)


def device_of(versions: dict[str, str]) -> str:
    """ "cuda" where setup found a CUDA torch in the environment, else "cpu"."""
    return "cpu" if versions.get("cuda", "no") in ("no", "") else "cuda"


def probe_cuda(python: Path) -> str:
    """The CUDA version the environment's torch runs on, or "no" (no torch, no GPU, or a CPU build)."""
    code = "import torch; print(torch.version.cuda if torch.cuda.is_available() else 'no')"
    try:
        probe = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return "no"
    lines = probe.stdout.strip().splitlines()
    return lines[-1] if probe.returncode == 0 and lines else "no"


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver answers (decides a CUDA or CPU install before any torch exists)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def create_venv(
    interpreter: Path, target: Path, *, size_gb: float, share: dict[str, str] | None = None
) -> tuple[Path, int]:
    """A new virtual environment at ``target`` (any old one removed first): its interpreter, and the bytes linked.

    ``share`` (package -> pinned version: torch's) links those packages from a sibling backend environment of the
    same Python (orchestrator.envshare); the disk must then have room for ``size_gb`` less what was linked.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    result = subprocess.run([str(interpreter), "-m", "venv", str(target)], capture_output=True, text=True)
    if result.returncode != 0:
        raise BackendNotReady(
            f"creating a virtual environment at {target} with {interpreter} failed: {result.stderr.strip()[-300:]}",
            "install the venv module for that Python (Debian: apt install python3-venv), or pass --python",
        )
    exe = venv_python(target)
    siblings = [venv_python(env) for env in sorted(target.parent.iterdir()) if env != target]
    linked = link_shared(exe, [python for python in siblings if python.exists()], share or {})
    need_gb = max(size_gb - linked / 1e9, 0)
    free_gb = shutil.disk_usage(target.parent).free / 1e9
    if need_gb and free_gb < need_gb + 1:
        shutil.rmtree(target)
        raise BackendNotReady(
            f"{target.parent} has {free_gb:.1f} GB free; the environment needs about {need_gb:.0f} GB",
            "free some disk space, or set LORAFORGE_HOME to a folder on a larger disk",
        )
    return exe, linked


_PIP_STEP = re.compile(r"^(Collecting|Downloading|Installing collected packages|Successfully installed|Building)")


def run_pip(argv: list[str], *, console: Any, label: str, cwd: Path | None = None) -> None:
    """Run pip with a progress line (the package being collected or downloaded): long installs show what is
    happening, not a frozen prompt. Raises with the output's tail on failure."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    tail: list[str] = []
    collected = 0
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(f"installing {label}", total=None)
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=cwd
        )
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            tail = [*tail[-30:], line]
            if _PIP_STEP.match(line):
                collected += line.startswith("Collecting")
                progress.update(task, description=f"installing {label}: {collected} packages · {line[:70]}")
        returncode = process.wait()
        progress.update(task, total=1, completed=1)
    if returncode != 0:
        raise BackendNotReady(
            f"pip failed installing {label} (exit {returncode}):\n" + "\n".join(tail[-12:]),
            "check the network / package index, then run `loraforge setup` again",
        )


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


# --- finding interpreters -------------------------------------------------------------------------------------


def python_version(python: Path | str) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor, patch = (int(x) for x in out.stdout.strip().split("."))
    return major, minor, patch


def _pyenv_roots() -> list[Path]:
    roots = []
    if os.environ.get("PYENV_ROOT"):
        roots.append(Path(os.environ["PYENV_ROOT"]))
    roots.append(Path.home() / ".pyenv")
    return roots


def candidate_pythons(minimum: tuple[int, int], maximum: tuple[int, int] | None = None) -> list[Path]:
    """Interpreters that may satisfy the range: PATH first (python3.X names), then pyenv's versions folder.

    pyenv's shims answer only when a version is selected, so its real interpreters are found under
    ``$PYENV_ROOT/versions/*/bin`` instead of through the shim.
    """
    found: list[Path] = []
    top = maximum or (3, 14)
    minors = range(top[1], minimum[1] - 1, -1) if top[0] == minimum[0] == 3 else range(14, 7, -1)
    for minor in minors:
        exe = shutil.which(f"python3.{minor}")
        if exe:
            found.append(Path(exe))
    for root in _pyenv_roots():
        versions = root / "versions"
        if versions.is_dir():
            for folder in sorted(versions.iterdir(), key=_version_key, reverse=True):
                for name in ("python3", "python"):
                    exe = folder / "bin" / name
                    if exe.exists():
                        found.append(exe)
                        break
    exe = shutil.which("python3")
    if exe:
        found.append(Path(exe))
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", path.name)[:3]) or (0,)


def find_python(
    minimum: tuple[int, int], maximum: tuple[int, int] | None = None, explicit: str | None = None
) -> tuple[Path, tuple[int, int, int]]:
    """An interpreter with minimum <= version < maximum (exclusive), honouring ``--python`` when given."""
    wanted = f">= {minimum[0]}.{minimum[1]}" + (f", < {maximum[0]}.{maximum[1]}" if maximum else "")
    if explicit:
        exe = shutil.which(explicit) or explicit
        version = python_version(exe)
        if version is None:
            raise BackendNotReady(f"--python {explicit}: cannot run it", "give the path of a working interpreter")
        if version[:2] < minimum or (maximum and version[:2] >= maximum):
            raise BackendNotReady(
                f"--python {explicit} is Python {'.'.join(map(str, version))}; this backend needs Python {wanted}",
                f"install a suitable Python (e.g. `pyenv install {minimum[0]}.{minimum[1]}`) and pass it with --python",
            )
        return Path(exe), version
    seen: list[str] = []
    for exe in candidate_pythons(minimum, maximum):
        version = python_version(exe)
        if version is None:
            continue
        seen.append(f"{exe} ({'.'.join(map(str, version))})")
        if version[:2] >= minimum and not (maximum and version[:2] >= maximum):
            return exe, version
    raise BackendNotReady(
        f"no Python {wanted} found (looked on PATH and in pyenv: {', '.join(seen) or 'nothing'})",
        f"install one (e.g. `pyenv install {minimum[0]}.{minimum[1]}`) or pass --python /path/to/python3.{minimum[1]}",
    )


def package_versions(python: Path, names: list[str]) -> dict[str, str | None]:
    """Installed versions read from package metadata (nothing is imported, so this is quick): from a virtual env's
    site-packages folder in this process when every package is there (each run's check, ~0.1 s sooner than starting
    the env's interpreter), else as that interpreter sees them (another layout, a package it finds elsewhere)."""
    found = _venv_versions(python, names)
    if found is not None and all(found.values()):
        return found
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try: return m.version(n)\n"
        "    except m.PackageNotFoundError: return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    try:
        out = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout) if out.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}


def _venv_versions(python: Path, names: list[str]) -> dict[str, str | None] | None:
    """The versions in the site-packages of the virtual env ``python`` belongs to; None when it is not a venv with
    one such folder. A package found there is the one the interpreter imports: it comes first on its path."""
    import importlib.metadata

    root = python.parent.parent
    if not (root / "pyvenv.cfg").is_file():
        return None
    sites = [*root.glob("lib/python*/site-packages"), *root.glob("Lib/site-packages")]
    if len(sites) != 1:
        return None
    found: dict[str, str | None] = {}
    for name in names:
        dist = next(iter(importlib.metadata.distributions(name=name, path=[str(sites[0])])), None)
        found[name] = dist.version if dist is not None else None
    return found


# --- setting a backend up (the `setup` command and the demo share this) ---------------------------------------


def setup_backend(name: str, request: Any, console: Any) -> BackendEnv:
    """Create or register ``name``'s environment as ``request`` (a backends.base.SetupRequest) says, check it,
    and save it in the registry; BackendNotReady with the first problem and its fix when it is not usable."""
    from backends import base

    backend = base.get(name)
    env = backend.setup(request, console)
    problems = backend.check(env)
    if problems:
        raise BackendNotReady(f"{name}: {problems[0].message}", problems[0].fix)
    save_env(env)
    return env


def ensure_backend(name: str, console: Any) -> BackendEnv:
    """The registered environment of ``name`` when it is usable; otherwise set up now with the defaults."""
    from backends import base
    from backends.base import SetupRequest

    env = load_registry().get(name)
    if env is not None and env.python.exists() and not base.get(name).check(env):
        return env
    console.print(f"the {name} backend is not set up yet: setting it up now (one time)")
    return setup_backend(name, SetupRequest(force=env is not None), console)
