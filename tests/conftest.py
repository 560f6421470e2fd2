"""Test isolation: each test gets its own HOME, loraforge home, caches and no colour; shared fixtures located."""

from __future__ import annotations

import os
import signal
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

# A suite started in the background by a non-interactive shell (`cmd &`) inherits SIGINT ignored, and so would every
# process it starts, since exec keeps an ignored signal ignored: the Ctrl-C tests need a loraforge and a trainer that
# hear it, as in a terminal. A handler here is reset to the default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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
    skip = pytest.mark.skip(reason="slow (many minutes or many GiB of RAM): run it with `pytest -m slow`")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, None]:
    """A test whose model or environment the disk has no room for is skipped, saying how much it needs and where:
    a small CI disk is the machine's limit, not a defect of the code under test."""
    from orchestrator.errors import NotEnoughDisk

    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(NotEnoughDisk):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {call.excinfo.value.message}")


@pytest.fixture
def backend_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A fresh loraforge home for an integration test: it knows the backends registered on this machine and shares
    the machine's tiny-model cache (built once, gigabytes); caches, datasets and runs stay in tmp_path. Returns the
    registered environments by backend name."""
    from orchestrator.envs import load_registry, save_env

    monkeypatch.setenv("LORAFORGE_HOME", str(_REAL_HOME))
    registry = load_registry()
    real_tiny = _REAL_HOME / "cache" / "tiny"
    real_tiny.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "loraforge-home"
    monkeypatch.setenv("LORAFORGE_HOME", str(home))
    for env in registry.values():
        save_env(env)
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "tiny").symlink_to(real_tiny)
    return registry


def usable_env(registry: dict, backend: str):  # type: ignore[no-untyped-def]
    """The registered environment of ``backend``, or skip the test with the command that sets it up."""
    from backends import base

    setup = {
        "kohya": "run `git submodule update --init` then `loraforge setup kohya`",
        "simpletuner": "run `loraforge setup simpletuner`",
    }.get(backend, f"run `loraforge setup {backend}`")
    env = registry.get(backend)
    if env is None:
        pytest.skip(f"the {backend} backend is not set up on this machine: {setup}")
    problems = base.get(backend).check(env)
    if problems:
        pytest.skip(f"the {backend} environment is not usable ({problems[0].message}): {setup}")
    return env


def family_params() -> list[Any]:
    """The families of orchestrator.tiny.FAMILY_BUILDERS as test parameters; Chroma's, whose model takes ~2.8 GB of
    disk (its width is fixed at 3072), with the slow tests, where a CI disk is small."""
    from orchestrator.tiny import FAMILY_BUILDERS

    return [pytest.param(f, marks=pytest.mark.slow) if f == "chroma" else f for f in sorted(FAMILY_BUILDERS)]
