"""One-shot training refuses unclear input before any prep work, with a hint (no traceback, nothing written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.display import console
from orchestrator.errors import LoraforgeError
from orchestrator.oneshot import OneShot, prepare_oneshot


def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    return folder


def test_missing_base_model_is_a_user_error(tmp_path: Path) -> None:
    spec = OneShot(photos(tmp_path), base_model=None, trigger="ohwx person", runs_root=tmp_path / "runs")
    with pytest.raises(LoraforgeError, match="--base-model"):
        prepare_oneshot(spec, console())
    assert not (tmp_path / "runs").exists()


def test_face_without_trigger_is_a_user_error(tmp_path: Path) -> None:
    spec = OneShot(photos(tmp_path), "stabilityai/stable-diffusion-xl-base-1.0", None, runs_root=tmp_path / "runs")
    with pytest.raises(LoraforgeError, match="trigger"):
        prepare_oneshot(spec, console())
    assert not (tmp_path / "runs").exists()


def test_the_command_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", str(photos(tmp_path)), "--trigger", "ohwx", "--output-dir", str(tmp_path / "runs")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--base-model" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
