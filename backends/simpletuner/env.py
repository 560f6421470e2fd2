"""SimpleTuner's Python environment: the verified versions, creating or registering it, and checking it.

SimpleTuner 4.10.1 needs Python >= 3.12 (< 3.15) and transformers 5.22.2 (5.23 and later break every run); its
wheel lists no torch: the ``[cpu]`` or ``[cuda]`` extra brings it, pinned here with torchvision to the pair that
was verified. Whether the environment's torch sees CUDA is probed once, at setup, and saved with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.base import Problem, SetupRequest
from orchestrator.envs import (
    BackendEnv,
    create_venv,
    find_python,
    home,
    nvidia_gpu_present,
    package_versions,
    probe_cuda,
    python_version,
    run_pip,
    venv_python,
)
from orchestrator.errors import BackendNotReady

VERSION = "4.10.1"
PYTHON_MIN = (3, 12)
PYTHON_MAX = (3, 15)  # exclusive
PINS = {"torch": "2.13.0", "torchvision": "0.28.0", "transformers": "5.22.2"}
VENV_SIZE_GB = 7.0  # measured: the CPU install with torch 2.13 and its wheels
SETUP = "loraforge setup simpletuner"


def describe_env(python: Path, *, managed: bool) -> BackendEnv:
    """A BackendEnv with the installed versions and whether its torch sees CUDA (``versions["cuda"]``)."""
    versions = {k: v for k, v in package_versions(python, ["simpletuner", "torch", "transformers"]).items() if v}
    found = python_version(python)
    if found:
        versions["python"] = ".".join(map(str, found))
    if "torch" in versions:
        versions["cuda"] = probe_cuda(python)
    return BackendEnv(backend="simpletuner", python=python, versions=versions, managed=managed)


def check(env: BackendEnv) -> list[Problem]:
    """What is wrong with ``env``, each with the command that fixes it; reads only."""
    if not env.python.exists():
        return [Problem(f"interpreter {env.python} does not exist", f"{SETUP} --force")]
    version = python_version(env.python)
    if version is None:
        return [Problem(f"interpreter {env.python} does not run", f"{SETUP} --force")]
    if not PYTHON_MIN <= version[:2] < PYTHON_MAX:
        shown = ".".join(map(str, version))
        return [
            Problem(
                f"{env.python} is Python {shown}; SimpleTuner {VERSION} needs Python >= 3.12, < 3.15",
                f"{SETUP} --force --python /path/to/python3.12",
            )
        ]
    installed = package_versions(env.python, ["simpletuner", "transformers", "torch"])
    pip = f"{env.python} -m pip install"
    problems = []
    if installed.get("simpletuner") is None:
        problems.append(Problem("simpletuner is not installed in this environment", f"{SETUP} --force"))
    elif installed["simpletuner"] != VERSION:
        problems.append(
            Problem(
                f"simpletuner {installed['simpletuner']} is installed; loraforge is verified with {VERSION}",
                f'{pip} "simpletuner[cpu]=={VERSION}" transformers=={PINS["transformers"]}',
            )
        )
    transformers = installed.get("transformers")
    if transformers is not None and transformers != PINS["transformers"]:
        problems.append(
            Problem(
                f"transformers {transformers} is installed; SimpleTuner {VERSION} needs {PINS['transformers']} "
                "(5.23 and later break every run)",
                f"{pip} transformers=={PINS['transformers']}",
            )
        )
    return problems


def setup(request: SetupRequest, console: Any) -> BackendEnv:
    """Register ``request.venv``, or create loraforge's own environment (kept when it is already healthy)."""
    if request.venv is not None:
        exe = venv_python(request.venv)
        if not exe.exists():
            raise BackendNotReady(f"--venv {request.venv}: no interpreter at {exe}", "pass the folder of a virtual env")
        return describe_env(exe, managed=False)
    target = home() / "envs" / "simpletuner"
    exe = venv_python(target)
    if exe.exists() and not request.force:
        env = describe_env(exe, managed=True)
        if not check(env):
            console.print(f"simpletuner environment already at {target} (use --force to recreate)")
            return env
    try:  # prefer the verified 3.12; any supported version otherwise
        interpreter, version = find_python(PYTHON_MIN, (3, 13), request.python)
    except BackendNotReady:
        interpreter, version = find_python(PYTHON_MIN, PYTHON_MAX, request.python)
    extra = "cuda" if nvidia_gpu_present() else "cpu"
    console.print(
        f"creating {target} with Python {'.'.join(map(str, version))} ({interpreter}); installing "
        f"simpletuner[{extra}]=={VERSION}: about {VENV_SIZE_GB:.0f} GB of disk, several minutes"
    )
    shared = {name: PINS[name] for name in ("torch", "torchvision")}
    exe, linked = create_venv(interpreter, target, size_gb=VENV_SIZE_GB, share=shared)
    if linked:
        console.print(
            f"torch {PINS['torch']} and its CUDA libraries linked from another backend's environment "
            f"({linked / 1e9:.1f} GB shared, not copied)"
        )
    constraints = target / "loraforge-constraints.txt"
    constraints.write_text("".join(f"{k}=={v}\n" for k, v in PINS.items()), encoding="utf-8")
    run_pip(
        [str(exe), "-m", "pip", "install", f"simpletuner[{extra}]=={VERSION}", "-c", str(constraints)],
        console=console,
        label=f"simpletuner {VERSION}",
    )
    return describe_env(exe, managed=True)
