"""Test isolation: each test gets its own HOME, loraforge home, caches and no colour; shared fixtures located."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The shared fixtures live beside the checkout (../shared); LORAFORGE_SHARED overrides.
SHARED = Path(os.environ.get("LORAFORGE_SHARED", REPO.parent / "shared"))
# Backend environments registered on this machine (by `loraforge setup`), captured before isolation.
_REAL_HOME = Path(os.environ.get("LORAFORGE_HOME") or Path.home() / ".local" / "share" / "loraforge")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LORAFORGE_HOME", str(home / "loraforge"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home


@pytest.fixture
def fixtures_dir() -> Path:
    path = SHARED / "fixtures"
    if not path.is_dir():
        pytest.skip(f"shared fixtures not found at {path} (set LORAFORGE_SHARED)")
    return path


@pytest.fixture
def real_registry(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Use the machine's real backend registry (integration tests), read-only in spirit."""
    monkeypatch.setenv("LORAFORGE_HOME", str(_REAL_HOME))
    return _REAL_HOME


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`slow` tests (minutes, many GiB of RAM) are left out unless asked for by marker: `pytest -m slow`."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow (minutes, ~16 GiB of RAM): run it with `pytest -m slow`")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
