"""Backend environments share torch as hard links: real venvs, a real wheel installed by pip, pip's own view after.

The wheel is a small one built here under torch's name (a wheel is a zip with its dist-info), so the test needs no
index and no 1 GB download; what is checked is what pip and the interpreter of the second environment see.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from orchestrator.envs import create_venv
from orchestrator.envshare import link_shared, shareable, site_packages


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(folder: Path, name: str, version: str, module: str, body: str) -> Path:
    """A pure-Python wheel with one module, installable by pip offline."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": body.encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "\n".join([*(_record_line(k, v) for k, v in files.items()), f"{info}/RECORD,,"]) + "\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for file, data in files.items():
            archive.writestr(file, data)
        archive.writestr(f"{info}/RECORD", record)
    return path


def pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def lender(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A backend environment holding "torch" 2.13.0 and a CUDA library package, installed by pip from wheels."""
    root = tmp_path_factory.mktemp("envs")
    wheels = root / "wheels"
    wheels.mkdir()
    build_wheel(wheels, "torch", "2.13.0", "torch", "VERSION = '2.13.0'\n")
    build_wheel(wheels, "nvidia_cudnn_cu13", "9.20.0.48", "nvidia_cudnn", "")
    build_wheel(wheels, "unrelated", "1.0", "unrelated", "")
    venv.create(root / "envs" / "simpletuner", with_pip=True)
    python = root / "envs" / "simpletuner" / "bin" / "python"
    names = ["torch==2.13.0", "nvidia_cudnn_cu13", "unrelated"]
    result = pip(python, "install", "--no-index", "--find-links", str(wheels), *names)
    assert result.returncode == 0, result.stderr
    return python


def test_a_new_environment_links_torch_and_pip_sees_it_installed(lender: Path) -> None:
    target = lender.parent.parent.parent / "kohya"
    python, linked = create_venv(Path(sys.executable), target, size_gb=0, share={"torch": "2.13.0"})
    assert linked > 0
    site, source = site_packages(python), site_packages(lender)
    assert site is not None and source is not None
    for relative in ("torch/__init__.py", "nvidia_cudnn/__init__.py"):
        assert (site / relative).stat().st_ino == (source / relative).stat().st_ino  # one copy, two names
    assert not (site / "unrelated").exists()  # only torch and what only torch brings
    shown = pip(python, "list", "--format=freeze").stdout
    assert "torch==2.13.0" in shown and "nvidia_cudnn_cu13==9.20.0.48" in shown.replace("-", "_")
    imported = subprocess.run([str(python), "-c", "import torch; print(torch.VERSION)"], capture_output=True, text=True)
    assert imported.stdout.strip() == "2.13.0"
    # removing it from the new environment leaves the lender whole
    assert pip(python, "uninstall", "-y", "torch").returncode == 0
    assert (source / "torch" / "__init__.py").read_text() == "VERSION = '2.13.0'\n"
    assert "torch==2.13.0" in pip(lender, "list", "--format=freeze").stdout


def test_another_pin_or_another_python_links_nothing(lender: Path, tmp_path: Path) -> None:
    source = site_packages(lender)
    assert source is not None
    assert shareable(source, {"torch": "2.14.1"}) == []  # a different torch: its CUDA libraries differ too
    other = tmp_path / "lib" / "python3.99" / "site-packages"
    other.mkdir(parents=True)
    (tmp_path / "bin").mkdir()
    assert link_shared(tmp_path / "bin" / "python", [lender], {"torch": "2.13.0"}) == 0
    assert list(other.iterdir()) == []


def test_a_disk_without_room_refuses_the_environment_and_leaves_nothing(tmp_path: Path) -> None:
    from orchestrator.errors import BackendNotReady

    target = tmp_path / "envs" / "kohya"
    with pytest.raises(BackendNotReady, match=r"GB free; the environment needs about \d+ GB"):
        create_venv(Path(sys.executable), target, size_gb=1e9)  # a billion GB: no disk has it
    assert not target.exists()
