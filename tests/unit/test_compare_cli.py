"""`loraforge compare` without any backend set up: every arm is reported as skipped with its reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from compare_runs import ReportPage, make_job_data
from PIL import Image

pytest.importorskip("matplotlib", reason="pip install -e '.[report]'")


def _job_file(tmp_path: Path) -> Path:
    data = make_job_data(tmp_path)
    Image.new("RGB", (64, 64), "red").save(Path(data["dataset"]) / "a.png")
    (Path(data["dataset"]) / "a.txt").write_text("ohwx person")
    Path(data["base_model"]).mkdir()
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(data))
    return job


def _compare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "compare", *args], capture_output=True, text=True, timeout=300
    )


def test_arms_whose_backend_is_not_set_up_are_skipped_with_the_reason(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = _compare(str(_job_file(tmp_path)), "--backends", "kohya,simpletuner", "-o", str(out), "--json")
    assert result.returncode == 1, result.stderr  # not every arm finished
    assert "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    assert [(a["label"], a["status"]) for a in data["arms"]] == [("kohya", "skipped"), ("simpletuner", "skipped")]
    for arm in data["arms"]:
        assert f"loraforge setup {arm['backend']}" in arm["reason"]
    page = ReportPage((out / "report.html").read_text())
    assert {row["status"] for row in page.rows.values()} == {"skipped"}
    assert json.loads((out / "arms.json").read_text())[0]["status"] == "skipped"
    assert "kohya: the kohya backend is not set up" in result.stderr


def test_nothing_to_compare_is_a_clear_error(tmp_path: Path) -> None:
    result = _compare(str(_job_file(tmp_path)), "--backends", "kohya")
    assert result.returncode == 2
    assert "nothing to compare" in result.stderr and "--vary" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_vary_field_exits_2_naming_it(tmp_path: Path) -> None:
    result = _compare(str(_job_file(tmp_path)), "--vary", "network.rnak=8,16", "--dry-run")
    assert result.returncode == 2
    assert "network.rnak: unknown setting" in result.stderr


def test_arms_on_several_gpus_keep_their_order(tmp_path: Path) -> None:
    """Two GPUs: arms run side by side on worker threads; results come back in the arms' order, each reported."""
    from compare_runs import make_job_data

    from orchestrator.compare.arms import expand_arms
    from orchestrator.compare.runner import run_arms

    data = make_job_data(tmp_path)
    Image.new("RGB", (64, 64), "red").save(Path(data["dataset"]) / "a.png")
    Path(data["base_model"]).mkdir()
    arms = expand_arms(data, ["kohya", "simpletuner"], ["network.rank=4,8"])
    done: list[str] = []
    results = run_arms(arms, gpus=["0", "1"], on_arm_done=lambda r: done.append(r.label))
    assert [r.label for r in results] == [a.label for a in arms]
    assert sorted(done) == sorted(a.label for a in arms)
    assert {r.status for r in results} == {"skipped"}  # nothing is set up in the isolated home


def test_report_on_existing_run_folders(tmp_path: Path) -> None:
    from compare_runs import make_run

    from orchestrator.events import Finished, Progress

    a = make_run(tmp_path, "kohya", [Progress(1, 2, loss=0.5), Progress(2, 2, loss=0.4), Finished(None, 1.0)])
    b = make_run(tmp_path, "simpletuner", [Progress(1, 2, loss=0.6), Progress(2, 2, loss=0.3), Finished(None, 1.0)])
    out = tmp_path / "report"
    result = _compare("--from-runs", str(a.path), str(b.path), "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [arm["final_loss"] for arm in data["arms"]] == [0.4, 0.3]
    assert (out / "report.html").exists()
    bad = _compare("--from-runs", str(tmp_path))
    assert bad.returncode == 2 and "is not a loraforge run folder" in bad.stderr
