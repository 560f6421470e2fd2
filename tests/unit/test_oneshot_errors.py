"""One-shot training refuses unclear input before any prep work, with a hint (no traceback, nothing written)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from orchestrator.commands import train
from orchestrator.errors import LoraforgeError
from orchestrator.oneshot import run_oneshot


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    photos = tmp_path / "photos"
    photos.mkdir()
    return parser.parse_args([str(photos), "--output-dir", str(tmp_path / "runs"), *extra])


def test_missing_base_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(LoraforgeError, match="--base-model"):
        run_oneshot(_args(tmp_path, "--trigger", "ohwx person"))
    assert not (tmp_path / "runs").exists()


def test_face_without_trigger_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(LoraforgeError, match="trigger"):
        run_oneshot(_args(tmp_path, "--base-model", "stabilityai/stable-diffusion-xl-base-1.0"))
    assert not (tmp_path / "runs").exists()
