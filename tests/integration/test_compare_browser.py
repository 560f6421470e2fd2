"""report.html as people see it: opened in headless Chromium, screenshotted, and the screenshot is not blank."""

from __future__ import annotations

from pathlib import Path

import pytest
from compare_runs import chromium, has_colour, looks_drawn, make_run, screenshot

from orchestrator.compare import build_report
from orchestrator.compare.rundata import ArmResult
from orchestrator.events import Finished, Progress

pytestmark = pytest.mark.integration


@pytest.mark.skipif(chromium() is None, reason="headless Chromium not installed: apt-get install -y chromium")
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="pip install -e '.[report]'")
    curve = [Progress(step, 40, loss=0.3 * 0.97**step + 0.02 * (step % 3)) for step in range(1, 41)]
    samples = [("a photo of ohwx person", 42, True), ("a photo of a person", 42, False)]
    a = make_run(tmp_path, "kohya", [*curve, Finished(None, 1.0)], rank=8, samples=samples)
    b = make_run(tmp_path, "simpletuner", [*curve[::2], Finished(None, 1.0)], rank=8, samples=samples)
    report = build_report(
        [
            ArmResult("kohya", "kohya", "finished", None, a.path),
            ArmResult("simpletuner", "simpletuner", "finished", None, b.path),
            ArmResult("kohya network.rank=16", "kohya", "failed", "out_of_memory: the GPU ran out of memory"),
        ],
        tmp_path / "report",
    )
    shot = screenshot(report.html_path, tmp_path / "shot.png", tmp_path)
    assert shot.size == (1280, 2000)
    assert looks_drawn(shot)
    # The loss chart is drawn in colour: matplotlib's default blue and orange lines are on the page.
    assert has_colour(shot, (31, 119, 180)) and has_colour(shot, (255, 127, 14))
