"""sd-scripts' environment: its checkout, its virtual environment, and the option names that checkout has.

sd-scripts is not a package: it runs from a checkout (by default the submodule third_party/sd-scripts) with the
checkout as working directory, in a venv holding torch and its requirements.txt.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from backends.base import Problem, SetupRequest
from backends.kohya.families import SCRIPTS
from backends.kohya.options import script_options, sd_scripts_options
from orchestrator.envs import (
    BackendEnv,
    create_venv,
    find_python,
    home,
    package_versions,
    probe_cuda,
    python_version,
    run_pip,
    venv_python,
)
from orchestrator.errors import BackendNotReady

# torch and torchvision, each pair verified with sd-scripts. On Python 3.12, SimpleTuner's pair, so that the two
# environments share one copy of torch and its CUDA libraries (orchestrator.envshare: about 4.5 GB less disk);
# elsewhere 2.14.1 (where a CPU-only build of 2.13 is what pip finds, PyPI's torchvision 0.28 fails to import beside it)
SHARED_TORCH = {"torch": "2.13.0", "torchvision": "0.28.0"}
OTHER_TORCH = {"torch": "2.14.1", "torchvision": "0.29.1"}


def torch_pair(version: tuple[int, ...]) -> dict[str, str]:
    return SHARED_TORCH if tuple(version[:2]) == (3, 12) else OTHER_TORCH


def torch_pins(python: Path) -> list[str]:
    pair = torch_pair(python_version(python) or (0, 0))
    return [f"{name}=={version}" for name, version in pair.items()]


PACKAGES = ["torch", "torchvision", "accelerate", "diffusers", "transformers"]
SETUP = "loraforge setup kohya"


def default_root() -> Path:
    """The sd-scripts checkout beside the packages: <repo>/third_party/sd-scripts."""
    return Path(__file__).resolve().parents[2] / "third_party" / "sd-scripts"


def missing_sd_scripts(root: Path) -> tuple[str, str]:
    """The message and fix when there is no sd-scripts checkout: the submodule folder of a plain clone is empty."""
    if root == default_root():
        return (
            f"sd-scripts not found: {root} is empty (a git submodule, not fetched by a plain `git clone`)",
            "git submodule update --init (or clone with `git clone --recursive`), or pass --sd-scripts DIR "
            "(a kohya-ss/sd-scripts checkout)",
        )
    return (
        f"sd-scripts not found at {root} (no train_network.py)",
        "pass --sd-scripts DIR (a kohya-ss/sd-scripts checkout)",
    )


def sd_scripts_commit(root: Path) -> str | None:
    """The sd-scripts commit of a checkout. A folder without its own .git (the submodule filled by copying, as CI
    does) is the commit the repository pins; never the enclosing repository's own HEAD."""
    if (root / ".git").exists():
        argv, parse = ["git", "-C", str(root), "rev-parse", "HEAD"], str.strip
    elif root == default_root():
        repo = root.parent.parent
        argv = ["git", "-C", str(repo), "ls-tree", "HEAD", str(root.relative_to(repo))]
        parse = lambda out: out.split()[2] if out.startswith("160000 commit ") else ""  # noqa: E731
    else:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse(out) or None


def check(env: BackendEnv) -> list[Problem]:
    """What stops this environment from training, each with its fix. Reads only."""
    root = env.root or default_root()
    if not env.python.exists():
        return [Problem(f"interpreter {env.python} does not exist", f"{SETUP} --force")]
    if not (root / "train_network.py").exists():
        return [Problem(*missing_sd_scripts(root))]
    installed = package_versions(env.python, PACKAGES)
    missing = [name for name in PACKAGES if not installed.get(name)]
    if missing:
        return [
            Problem(
                f"missing in the kohya environment: {', '.join(missing)}",
                f"cd {root} && {env.python} -m pip install {' '.join(torch_pins(env.python))} -r requirements.txt",
            )
        ]
    return []


def setup(request: SetupRequest, console: Any) -> BackendEnv:
    """Register an existing venv (``request.venv``) or create loraforge's own under $LORAFORGE_HOME/envs/kohya,
    then record the checkout's option names. An existing healthy env is kept unless ``force``."""
    root = (request.root or default_root()).resolve()
    given = venv_python(request.venv) if request.venv is not None else None
    if given is not None and not given.exists():  # what the user typed first, then what the checkout lacks
        raise BackendNotReady(f"--venv {request.venv}: no interpreter at {given}", "pass the folder of a virtual env")
    if not (root / "train_network.py").exists():
        raise BackendNotReady(*missing_sd_scripts(root))
    if given is not None:
        env = describe_env(given, root, managed=False)
        dump_options(env)
        return env
    target = home() / "envs" / "kohya"
    exe = venv_python(target)
    if exe.exists() and not request.force:
        env = describe_env(exe, root, managed=True)
        if not check(env):
            console.print(f"kohya environment already at {target} (use --force to recreate)")
            dump_options(env)
            return env
    try:  # prefer 3.12, as SimpleTuner does: the two environments then share torch
        interpreter, version = find_python((3, 12), (3, 13), request.python)
    except BackendNotReady:
        interpreter, version = find_python((3, 10), (3, 13), request.python)
    torch = torch_pair(version)
    console.print(
        f"creating {target} with Python {'.'.join(map(str, version))} ({interpreter}): torch {torch['torch']}, "
        "torchvision and sd-scripts' requirements, about 6 GB of disk, a few minutes"
    )
    exe, linked = create_venv(interpreter, target, size_gb=6, share=torch)
    if linked:
        console.print(
            f"torch {torch['torch']} and its CUDA libraries linked from another backend's environment "
            f"({linked / 1e9:.1f} GB shared, not copied)"
        )
    run_pip([str(exe), "-m", "pip", "install", *torch_pins(exe)], console=console, label="torch")
    requirements = [str(exe), "-m", "pip", "install", "-r", str(root / "requirements.txt")]
    run_pip(requirements, console=console, label="sd-scripts requirements", cwd=root)
    env = describe_env(exe, root, managed=True)
    dump_options(env)
    return env


def describe_env(python: Path, root: Path, *, managed: bool) -> BackendEnv:
    """The environment as the registry records it: package versions, Python, sd-scripts' commit, CUDA."""
    versions = {
        k: v for k, v in package_versions(python, ["torch", "accelerate", "diffusers", "transformers"]).items() if v
    }
    found = python_version(python)
    if found:
        versions["python"] = ".".join(map(str, found))
    commit = sd_scripts_commit(root)
    if commit:
        versions["sd-scripts"] = commit[:12]
    if "torch" in versions:
        versions["cuda"] = probe_cuda(python)
    return BackendEnv(backend="kohya", python=python, root=root, versions=versions, managed=managed)


# --- sd-scripts' own option names -----------------------------------------------------------------------------------


def options_dump(root: Path) -> Path:
    commit = sd_scripts_commit(root) or "unknown"
    return home() / "cache" / f"sd-scripts-options-{commit[:12]}-scripts.json"


def dump_options(env: BackendEnv) -> None:
    """Record the argparse option names of each of this checkout's training scripts (one per family) to reject
    unknown backend_args early: {script: [names]}."""
    root = env.root or default_root()
    target = options_dump(root)
    if target.exists():
        return
    code = (
        "import importlib, json, sys\n"
        "sys.argv = ['train_network.py']\n"
        "out = {}\n"
        f"for script in {sorted(set(SCRIPTS.values()))!r}:\n"
        "    try:\n"
        "        parser = importlib.import_module(script[:-3]).setup_parser()\n"
        "    except Exception:\n"  # a checkout without that script: it is assumed to take what loraforge ships
        "        continue\n"
        "    out[script] = sorted(a.dest for a in parser._actions)\n"
        "print(json.dumps(out))"
    )
    out = subprocess.run([str(env.python), "-c", code], capture_output=True, text=True, cwd=root, timeout=600)
    if out.returncode == 0 and out.stdout.strip():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(out.stdout.strip().splitlines()[-1], encoding="utf-8")
        known_options.cache_clear()


@cache
def known_options(root: Path, script: str = "train_network.py") -> frozenset[str]:
    """The option names of one of sd-scripts' training scripts: dumped once per checkout commit by `loraforge setup
    kohya`, else the lists shipped with loraforge (sd-scripts 48d368fa)."""
    dump = options_dump(root)
    if dump.exists():
        with contextlib.suppress(ValueError, AttributeError):
            dumped = json.loads(dump.read_text(encoding="utf-8")).get(script)
            if dumped:
                return frozenset(dumped)
    return frozenset(sd_scripts_options()) | frozenset(script_options().get(script, {}))
