"""user_path: a typed path with ~ expanded, and a ~name of no user on this machine kept as written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.userpath import user_path


def test_the_home_folder_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_path("~/models/x.safetensors") == tmp_path / "models" / "x.safetensors"
    assert user_path(Path("~")) == tmp_path


def test_a_tilde_name_of_no_user_stays_as_written() -> None:
    name = "~no-such-user-loraforge-7/model"
    with pytest.raises(RuntimeError):  # what pathlib does, and why user_path exists
        Path(name).expanduser()
    assert user_path(name) == Path(name)
    assert user_path("~0") == Path(os.path.expanduser("~0"))


def test_other_paths_are_unchanged() -> None:
    for text in ("runs", "/abs/path", "org/model-id", "a~b"):
        assert user_path(text) == Path(text)
