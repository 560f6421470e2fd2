"""`loraforge compare` for real: two SimpleTuner settings on the tiny SDXL model (6 steps each, CPU), plus Kohya
arms in a registry where Kohya is not set up, which must be reported as skipped while the SimpleTuner arms finish.

One comparison (about 80 s on 2 cores) is run per module; the tests check what its report says.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from compare_runs import (
    ReportPage,
    child_env,
    chromium,
    final_loss_in,
    looks_drawn,
    pixel_spread,
    real_env,
    screenshot,
)

pytestmark = pytest.mark.integration

SETUP = "`loraforge setup simpletuner` (or `loraforge setup simpletuner --venv EXISTING_VENV`)"


@pytest.fixture(scope="module")
def st_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A home whose registry has SimpleTuner only, the tiny SDXL model, a drawn dataset and a job file."""
    pytest.importorskip("matplotlib", reason="pip install -e '.[report]'")
    st_env, why = real_env("simpletuner")
    if st_env is None:
        pytest.skip(f"SimpleTuner not usable ({why}): run {SETUP}")
    from orchestrator.tiny import tiny_sdxl
    from orchestrator.tiny.dataset import make_dataset

    root = tmp_path_factory.mktemp("compare-st")
    home = root / "home"
    registry = home / "loraforge" / "envs.json"
    registry.parent.mkdir(parents=True)
    registry.write_text(json.dumps({"simpletuner": st_env.to_json()}))  # only SimpleTuner: Kohya is not set up
    job = {
        "name": "cmp",
        "base_model": str(tiny_sdxl(st_env.python, root=root / "tiny")),
        "family": "sdxl",
        "subject": "object",
        "trigger": "ohwx shape",
        "add_trigger": True,  # the drawn captions describe the shapes; the run's copy gets the trigger in front
        "dataset": str(make_dataset(root / "data", count=4, size=128)),
        "network": {"rank": 4},
        "training": {"steps": 6, "resolution": 128, "gradient_checkpointing": False},  # precision: bf16 (default)
    }
    job_file = root / "job.yaml"
    job_file.write_text(yaml.safe_dump(job))
    return {"root": root, "home": home, "job": job_file}


@pytest.fixture(scope="module")
def comparison(st_setup: dict[str, Path]) -> dict[str, Any]:
    out = st_setup["root"] / "out"
    argv = [sys.executable, "-m", "orchestrator.cli", "compare", str(st_setup["job"])]
    argv += ["--backends", "kohya,simpletuner", "--vary", "network.rank=4,8", "-o", str(out), "--json"]
    result = subprocess.run(argv, capture_output=True, text=True, env=child_env(st_setup["home"]), timeout=900)
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    return {"result": result, "out": out, "json": json.loads(result.stdout)}


def _arms(comparison: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {arm["label"]: arm for arm in comparison["json"]["arms"]}


ST_ARMS = ("simpletuner network.rank=4", "simpletuner network.rank=8")
KOHYA_ARMS = ("kohya network.rank=4", "kohya network.rank=8")


def test_two_simpletuner_settings_compared_for_real(comparison: dict[str, Any]) -> None:
    arms = _arms(comparison)
    assert list(arms) == [*KOHYA_ARMS, *ST_ARMS]
    on_disk = json.loads((comparison["out"] / "report.json").read_text())
    assert on_disk["arms"] == comparison["json"]["arms"]
    for label, rank in zip(ST_ARMS, (4, 8), strict=True):
        arm = arms[label]
        assert arm["status"] == "finished", arm["reason"]
        events = Path(arm["run_dir"]) / "events.jsonl"
        assert arm["final_loss"] is not None and arm["final_loss"] == final_loss_in(events)
        assert [s for s, _ in arm["loss_curve"]] == [1, 2, 3, 4, 5, 6]
        assert arm["loss_curve"][-1][1] == arm["final_loss"]
        assert (arm["step"], arm["total"]) == (6, 6)
        assert arm["lora"]["rank"] == rank and arm["lora"]["keys"] > 0 and arm["lora"]["dtype"]
        assert arm["lora"]["size_bytes"] == Path(arm["lora"]["path"]).stat().st_size
        assert 0 < arm["first_step_s"] <= arm["wall_s"]
        assert arm["steps_per_s"] > 0
        assert arm["peak_ram_bytes"] > 100 * 2**20  # a real torch process tree, measured while it ran
        assert arm["samples"] or arm["samples_note"]
    assert arms[ST_ARMS[1]]["lora"]["size_bytes"] > arms[ST_ARMS[0]]["lora"]["size_bytes"]
    differing = comparison["json"]["differing_settings"]
    assert differing["network.rank"] == {ST_ARMS[0]: 4, ST_ARMS[1]: 8}


def test_report_html_says_the_same(comparison: dict[str, Any]) -> None:
    arms = _arms(comparison)
    html = (comparison["out"] / "report.html").read_text()
    page = ReportPage(html)
    assert page.external == []  # self-contained
    assert set(page.rows) == set(arms)
    for label in ST_ARMS:
        assert page.rows[label]["status"] == "finished"
        assert page.rows[label]["final_loss"] == arms[label]["final_loss"]
    curves = page.image("loss-curves")
    assert curves is not None and pixel_spread(curves) > 5
    # The settings one backend cannot express are listed: SimpleTuner says bf16 is not used on CPU.
    neq = comparison["json"]["equivalence"]["not_equivalent"]
    assert any(line.startswith("simpletuner: training.precision=bf16") for line in neq), neq
    assert page.not_equivalent == neq
    mapping = {row["field"]: row for row in comparison["json"]["equivalence"]["mapping"]}
    assert mapping["network.rank"]["options"]["simpletuner"]["lora_rank"] == 4
    assert mapping["training.steps"]["options"]["simpletuner"] == {"max_train_steps": 6}


def test_arm_whose_backend_is_not_set_up_is_skipped_with_the_reason(comparison: dict[str, Any]) -> None:
    arms = _arms(comparison)
    for label in KOHYA_ARMS:
        assert arms[label]["status"] == "skipped"
        assert "loraforge setup kohya" in arms[label]["reason"]
        assert arms[label]["run_dir"] is None
    page = ReportPage((comparison["out"] / "report.html").read_text())
    assert "loraforge setup kohya" in page.rows[KOHYA_ARMS[0]]["cells"][-1]
    assert comparison["result"].returncode == 1  # not every arm finished
    stderr = comparison["result"].stderr
    assert "[kohya network.rank=4] skipped:" in stderr and "[simpletuner network.rank=8] finished" in stderr


@pytest.mark.skipif(chromium() is None, reason="headless Chromium not installed: apt-get install -y chromium")
def test_real_report_screenshot_is_not_blank(comparison: dict[str, Any], tmp_path: Path) -> None:
    shot = screenshot(comparison["out"] / "report.html", tmp_path / "report.png", tmp_path)
    assert looks_drawn(shot)


def test_ctrl_c_stops_the_comparison_and_still_reports(st_setup: dict[str, Path]) -> None:
    """SIGINT during the first arm: it ends interrupted with its run folder, the next arm is not started, and
    the report is written."""
    out = st_setup["root"] / "out-interrupted"
    argv = [sys.executable, "-m", "orchestrator.cli", "compare", str(st_setup["job"]), "--backends", "simpletuner"]
    argv += ["--vary", "network.rank=4,8", "-o", str(out)]
    child = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=child_env(st_setup["home"]))
    assert child.stderr is not None
    seen = []
    for line in child.stderr:  # readiness: the first arm has trained a step
        seen.append(line)
        if line.startswith("[simpletuner network.rank=4] step 1/"):
            child.send_signal(signal.SIGINT)
            break
    rest = child.stderr.read()
    assert child.wait(timeout=300) == 1, "".join(seen) + rest
    assert "Traceback" not in rest
    data = json.loads((out / "report.json").read_text())
    first, second = data["arms"]
    assert first["status"] == "interrupted" and Path(first["run_dir"], "logs", "stderr.log").exists()
    assert second["status"] == "skipped" and second["reason"] == "not run: the comparison was interrupted"
