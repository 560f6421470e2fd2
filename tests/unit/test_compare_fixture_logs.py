"""Reports over run folders whose events come from real backend logs, replayed by `loraforge parse-log`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from compare_runs import ReportPage, final_loss_in, make_run

from orchestrator.compare import build_report
from orchestrator.events import event_from_dict

pytest.importorskip("matplotlib", reason="pip install -e '.[report]'")

CASES = [
    # backend, stderr (or combined) log, stdout log, exit status of the real run
    ("kohya", "kohya/run1.stderr", "kohya/run1.stdout", 0),
    ("kohya", "kohya/run2.log", None, 0),
    ("kohya", "kohya/fail1.log", None, 1),
    ("simpletuner", "simpletuner/run1.stderr", "simpletuner/run1.stdout", 0),
    ("simpletuner", "simpletuner/run2.log", None, 0),
    ("simpletuner", "simpletuner/fail1.log", None, 1),
]


def _replay(fixtures: Path, backend: str, log: str, stdout: str | None, returncode: int) -> list:
    if importlib.util.find_spec(f"backends.{backend}") is None:
        pytest.skip(f"the {backend} backend module is not in this checkout")
    argv = [sys.executable, "-m", "orchestrator.cli", "parse-log", "--backend", backend, str(fixtures / "logs" / log)]
    if stdout:
        argv += ["--stdout", str(fixtures / "logs" / stdout)]
    argv += ["--returncode", str(returncode)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    return [event_from_dict(json.loads(line)) for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize(("backend", "log", "stdout", "returncode"), CASES, ids=[c[1] for c in CASES])
def test_report_over_replayed_logs(
    fixtures_dir: Path, tmp_path: Path, backend: str, log: str, stdout: str | None, returncode: int
) -> None:
    events = _replay(fixtures_dir, backend, log, stdout, returncode)
    status = "finished" if returncode == 0 else "failed"
    run = make_run(tmp_path, backend, events, status=status)
    report = build_report([run.path], tmp_path / "report")
    (arm,) = report.data["arms"]
    expected = final_loss_in(run.events_file)
    assert arm["final_loss"] == expected
    assert arm["status"] == status
    if expected is not None:
        assert arm["loss_curve"] and arm["loss_curve"][-1][1] == expected
        steps = [s for s, _ in arm["loss_curve"]]
        assert steps == sorted(set(steps))
    if returncode:
        assert arm["reason"]
    page = ReportPage(report.html_path.read_text())
    assert page.rows[arm["label"]]["final_loss"] == expected
    assert (page.image("loss-curves") is not None) == (expected is not None)
