"""A backend env's package versions, read in this process from its site-packages when they are all there, and from
its own interpreter otherwise: the same answer either way."""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.envs import package_versions


def _fake_venv(root: Path, packages: dict[str, str]) -> Path:
    (root / "pyvenv.cfg").parent.mkdir(parents=True)
    (root / "pyvenv.cfg").write_text("include-system-site-packages = false\n")
    site = root / "lib" / "python3.12" / "site-packages"
    for name, version in packages.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (root / "bin").mkdir()
    return root / "bin" / "python"  # never run: every package is found in site-packages


def test_versions_come_from_the_venvs_site_packages_without_starting_it(tmp_path: Path) -> None:
    python = _fake_venv(tmp_path / "env", {"torch": "2.13.0", "huggingface-hub": "0.30.1"})
    assert package_versions(python, ["torch", "huggingface_hub"]) == {"torch": "2.13.0", "huggingface_hub": "0.30.1"}


def test_a_package_not_in_site_packages_is_asked_of_the_interpreter(tmp_path: Path) -> None:
    python = _fake_venv(tmp_path / "env", {"torch": "2.13.0"})
    assert package_versions(python, ["torch", "accelerate"]) == {}  # the interpreter does not exist: nothing known
    real = Path(sys.executable)  # this test's own venv (or interpreter): its answer, whatever the layout
    assert package_versions(real, ["pytest", "no-such-package-here"]) == {
        "pytest": __import__("pytest").__version__,
        "no-such-package-here": None,
    }
