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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator.errors import BackendNotReady


def home() -> Path:
    """loraforge's own data folder: $LORAFORGE_HOME, else $XDG_DATA_HOME/loraforge, else ~/.local/share/loraforge."""
    if os.environ.get("LORAFORGE_HOME"):
        return Path(os.environ["LORAFORGE_HOME"]).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "loraforge"


def cache_dir() -> Path:
    return home() / "cache"


@dataclass
class BackendEnv:
    """A registered backend environment."""

    backend: str
    python: Path
    root: Path | None = None  # the sd-scripts checkout for kohya; None where the backend is a package
    versions: dict[str, str] = field(default_factory=dict)
    managed: bool = False  # created by loraforge (may be recreated) or the user's own install (never touched)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["python"] = str(self.python)
        data["root"] = str(self.root) if self.root else None
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
    except ValueError:
        return {}
    return {name: BackendEnv.from_json(data) for name, data in raw.items()}


def save_env(env: BackendEnv) -> None:
    registry = load_registry()
    registry[env.backend] = env
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: v.to_json() for k, v in registry.items()}, indent=2), encoding="utf-8")
    tmp.replace(path)


def get_env(backend: str) -> BackendEnv:
    """The registered environment of ``backend``, or a BackendNotReady error naming the setup command."""
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
    return env


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
    """Installed versions read from package metadata (nothing is imported, so this is quick)."""
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
