"""The comparison report, built from real run folders: what it says must match what the runs recorded."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from compare_runs import ReportPage, final_loss_in, make_run, pixel_spread

from orchestrator.compare import build_report
from orchestrator.compare.rundata import ArmResult
from orchestrator.events import Failure, Finished, Phase, Progress

pytest.importorskip("matplotlib", reason="pip install -e '.[report]'")


def _training(losses: list[float], total: int, *, twice: bool = False) -> list:
    events: list = [Phase("loading"), Phase("training")]
    for step, loss in enumerate(losses, start=1):
        if twice:  # sd-scripts draws each step twice: first without the loss, then with it
            events.append(Progress(step, total, it_per_s=2.0))
        events.append(Progress(step, total, loss=loss, it_per_s=2.0))
    return events


@pytest.fixture
def two_runs(tmp_path: Path):  # type: ignore[no-untyped-def]
    samples = [("a photo of ohwx person", 42, True), ("a photo of a person", 42, False)]
    ok = make_run(
        tmp_path,
        "kohya",
        [*_training([0.31, 0.27, 0.25, 0.22], 4, twice=True), Finished("x.safetensors", 12.0)],
        rank=4,
        metrics={
            "label": "kohya network.rank=4",
            "varied": {"network.rank": 4},
            "wall_s": 41.5,
            "first_step_s": 30.25,
            "steps_per_s": 3.5,
            "peak_ram_bytes": 1_500_000_000,
            "peak_gpu_bytes": None,
        },
        samples=samples,
    )
    # Finished names a path that is not there: the report falls back to the run's output folder.
    failed = make_run(
        tmp_path,
        "simpletuner",
        [
            *_training([0.4, 0.35], 4),
            Failure("out_of_memory", "the GPU ran out of memory", "lower the batch size", ["line"], "/x/stderr.log"),
        ],
        rank=8,
        status="failed",
        metrics={"label": "simpletuner network.rank=8", "varied": {"network.rank": 8}, "wall_s": 9.0},
    )
    return ok, failed


def test_report_from_runner_results_says_what_the_runs_recorded(tmp_path: Path, two_runs) -> None:  # type: ignore[no-untyped-def]
    ok, failed = two_runs
    results = [
        ArmResult("kohya network.rank=4", "kohya", "finished", None, ok.path, {"network.rank": 4}),
        ArmResult("simpletuner network.rank=8", "simpletuner", "failed", None, failed.path, {"network.rank": 8}),
        ArmResult("flux-thing", "simpletuner", "skipped", "the simpletuner backend is not set up", None),
    ]
    report = build_report(results, tmp_path / "report", title="my comparison")

    data = json.loads(report.json_path.read_text())
    arms = {arm["label"]: arm for arm in data["arms"]}
    assert [a["status"] for a in data["arms"]] == ["finished", "failed", "skipped"]
    assert arms["kohya network.rank=4"]["final_loss"] == final_loss_in(ok.events_file) == 0.22
    assert arms["simpletuner network.rank=8"]["final_loss"] == final_loss_in(failed.events_file) == 0.35
    assert arms["kohya network.rank=4"]["loss_curve"] == [[1, 0.31], [2, 0.27], [3, 0.25], [4, 0.22]]
    assert arms["kohya network.rank=4"]["first_step_s"] == 30.25
    assert arms["kohya network.rank=4"]["peak_ram_bytes"] == 1_500_000_000
    lora = arms["kohya network.rank=4"]["lora"]
    assert (lora["keys"], lora["modules"], lora["rank"], lora["dtype"], lora["layout"]) == (9, 3, 4, "F16", "kohya")
    assert lora["size_bytes"] == (ok.output / "cmp.safetensors").stat().st_size
    assert "out_of_memory: the GPU ran out of memory" in arms["simpletuner network.rank=8"]["reason"]
    assert arms["flux-thing"]["reason"] == "the simpletuner backend is not set up"
    assert data["differing_settings"]["network.rank"] == {"kohya network.rank=4": 4, "simpletuner network.rank=8": 8}

    page = ReportPage(report.html_path.read_text())
    assert page.external == []  # one self-contained file
    assert set(page.rows) == set(arms)
    assert page.rows["kohya network.rank=4"]["final_loss"] == 0.22
    assert page.rows["simpletuner network.rank=8"]["status"] == "failed"
    assert "lower the batch size" in page.rows["simpletuner network.rank=8"]["cells"][-1]
    assert page.rows["flux-thing"]["cells"][-1] == "the simpletuner backend is not set up"
    curves = page.image("loss-curves")
    assert curves is not None and curves.width > 400 and pixel_spread(curves) > 5
    grid = [img for img in page.images if img.get("alt", "").startswith("kohya network.rank=4: ")]
    assert len(grid) == 2  # both prompts, the one without the trigger included
    assert all(img["src"].startswith("data:image/jpeg;base64,") for img in grid)
    assert "no trigger: leakage check" in report.html_path.read_text()


def test_report_from_run_folders_alone(tmp_path: Path, two_runs) -> None:  # type: ignore[no-untyped-def]
    ok, failed = two_runs
    report = build_report([ok.path, str(failed.path)], tmp_path / "sweep")
    labels = [arm.label for arm in report.arms]
    assert labels == ["kohya network.rank=4", "simpletuner network.rank=8"]  # from each run's metrics.json
    assert [arm.status for arm in report.arms] == ["finished", "failed"]
    assert report.arms[0].final_loss == final_loss_in(ok.events_file)
    assert report.data["equivalence"] is None
    assert "Not checked" in report.html_path.read_text()


def test_run_folder_without_metrics_uses_the_backends_speed(tmp_path: Path) -> None:
    run = make_run(tmp_path, "kohya", [*_training([0.5, 0.4, 0.3], 3), Finished(None, 3.0)])
    (report,) = [build_report([run.path], tmp_path / "r")]
    arm = report.arms[0]
    assert arm.label == run.path.name
    assert arm.steps_per_s == 2.0 and arm.wall_s == 12.5  # the backend's it/s; run.json's seconds
    assert arm.peak_ram_bytes is None


def test_no_loss_anywhere_leaves_out_the_plot_with_a_reason(tmp_path: Path) -> None:
    report = build_report([ArmResult("a", "kohya", "skipped", "not set up")], tmp_path / "r")
    page = ReportPage(report.html_path.read_text())
    assert page.image("loss-curves") is None
    assert "loss-curves-missing" in page.ids
    assert report.data["loss_plot"] == "no arm reported a training loss"


def test_text_from_runs_is_escaped(tmp_path: Path) -> None:
    report = build_report([ArmResult("<script>alert(1)</script>", "kohya", "failed", 'a "quoted" <b>')], tmp_path)
    text = report.html_path.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_terminal_summary(tmp_path: Path, two_runs) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console

    from orchestrator.compare.terminal import print_summary

    ok, failed = two_runs
    report = build_report([ok.path, failed.path], tmp_path / "r")
    out = io.StringIO()
    print_summary(report, Console(file=out, width=220, no_color=True))
    text = out.getvalue()
    assert "kohya network.rank=4" in text and "0.22" in text and "1.4 GiB" in text
    assert "simpletuner network.rank=8: out_of_memory: the GPU ran out of memory" in text
