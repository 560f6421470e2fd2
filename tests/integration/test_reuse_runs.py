"""A second SimpleTuner run on the same model reuses the text embeddings the first one computed (from loraforge's
cache folder, never the dataset), and trains the same."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import usable_env

pytestmark = pytest.mark.integration


def test_the_second_run_reuses_the_first_runs_text_embeddings(backend_home: dict, tmp_path: Path) -> None:
    from orchestrator.envs import cache_dir
    from orchestrator.events import Log, Progress
    from orchestrator.job import build_job
    from orchestrator.tiny import tiny_sdxl
    from orchestrator.tiny.dataset import make_dataset
    from orchestrator.training import run_training

    env = usable_env(backend_home, "simpletuner")
    data = make_dataset(tmp_path / "data", count=3, size=128)
    before = sorted(p.name for p in data.iterdir())
    job = build_job(
        {
            "name": "reuse",
            "base_model": str(tiny_sdxl(env.python)),
            "trigger": "ohwx",
            "add_trigger": True,
            "dataset": str(data),
            "network": {"rank": 4},
            "training": {"steps": 2, "resolution": 128, "precision": "fp32", "gradient_checkpointing": False},
            "output": {"dir": str(tmp_path / "runs")},
        }
    )
    runs = []
    for _ in range(2):
        seen: list = []
        outcome = run_training(job, "simpletuner", handlers=[seen.append])
        assert outcome.ok, outcome.failure
        runs.append(seen)
    logs = [[e.text for e in seen if isinstance(e, Log)] for seen in runs]
    assert not any("reusing" in text for text in logs[0])
    assert any(text.startswith("reusing ") and "cached text embeddings" in text for text in logs[1]), logs[1]
    assert list((cache_dir() / "reuse").glob("*/*.pt"))
    assert [e.step for e in runs[1] if isinstance(e, Progress)] == [1, 2]
    assert sorted(p.name for p in data.iterdir()) == before  # nothing cached in the user's dataset
