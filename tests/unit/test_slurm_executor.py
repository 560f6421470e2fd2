"""Slurm executor: sbatch rendering, CLI output parsing (captured from the real local cluster), the job table."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.executors.base import load_table, lookup, record_job
from orchestrator.executors.slurm import SlurmOptions, parse_parsable, parse_scontrol, render_sbatch

FIXTURES = Path(__file__).parent.parent / "fixtures" / "slurm"


def test_render_sbatch_requeue_and_gres(tmp_path: Path) -> None:
    opts = SlurmOptions(partition="debug", nodes=2, gpus_per_node=2, time="00:10:00", requeue=True, signal_seconds=90)
    text = render_sbatch(tmp_path / "my job", "simpletuner", opts, python="/opt/py thon")
    assert "#SBATCH --gres=gpu:2" in text
    assert "#SBATCH --nodes=2" in text
    assert "#SBATCH --partition=debug" in text
    assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:USR1@90" in text
    assert '"/opt/py thon" -m orchestrator.agent' in text  # quoted through the json filter


def test_render_sbatch_plain_has_no_requeue(tmp_path: Path) -> None:
    text = render_sbatch(tmp_path, "kohya", SlurmOptions())
    assert "requeue" not in text and "--partition" not in text  # the cluster's default applies
    never = render_sbatch(tmp_path, "kohya", SlurmOptions(requeue=False))
    assert "#SBATCH --no-requeue" in never and "--signal" not in never


def test_parse_parsable() -> None:
    assert parse_parsable("42\n") == "42"
    assert parse_parsable("42;cluster\n") == "42"


def test_parse_scontrol_real_outputs() -> None:
    pending = parse_scontrol((FIXTURES / "scontrol_pending.txt").read_text())
    running = parse_scontrol((FIXTURES / "scontrol_running.txt").read_text())
    assert pending["JobState"] == "PENDING" and pending["Reason"] == "Resources"
    assert running["JobState"] == "RUNNING"
    assert running["Restarts"] == "0"


def test_job_table_round_trip(tmp_path: Path) -> None:
    record_job("7", "slurm", tmp_path / "a")
    record_job("8", "slurm", tmp_path / "b")
    assert lookup("8")["folder"] == str(tmp_path / "b")
    assert set(load_table()) == {"7", "8"}


def test_a_sweep_renders_a_job_array_with_one_folder_per_task(tmp_path: Path) -> None:
    text = render_sbatch(tmp_path / "my jobs", "simpletuner", SlurmOptions(tasks=4))
    assert "#SBATCH --array=0-3" in text and "slurm-%A_%a.out" in text
    assert f'-m orchestrator.agent "{tmp_path}/my jobs/tasks/""$SLURM_ARRAY_TASK_ID"' in text


def test_array_task_ids_resolve_to_their_task_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.errors import LoraforgeError
    from orchestrator.executors.base import array_tasks, lookup, record_job

    monkeypatch.setenv("LORAFORGE_HOME", str(tmp_path))
    record_job("41", "slurm", tmp_path / "single")
    record_job("42", "slurm", tmp_path / "sweep", tasks=2)
    assert array_tasks("42") == ["42_0", "42_1"] and array_tasks("41") == []
    assert lookup("42_1")["folder"] == str(tmp_path / "sweep" / "tasks" / "1")
    with pytest.raises(LoraforgeError, match="no submitted job 42_2"):
        lookup("42_2")


@pytest.mark.parametrize(
    ("text", "message"),
    [("network.rank: 8\n", "needs a non-empty list"), ("- 1\n", "a mapping"), ("a: [1\n", "cannot read")],
)
def test_bad_sweep_files_are_named_with_the_fix(tmp_path: Path, text: str, message: str) -> None:
    from orchestrator.compare.arms import load_sweep
    from orchestrator.errors import LoraforgeError

    (tmp_path / "sweep.yaml").write_text(text)
    with pytest.raises(LoraforgeError, match=message):
        load_sweep(str(tmp_path / "sweep.yaml"))


def test_sweep_grid_is_validated_like_any_job(tmp_path: Path) -> None:
    from orchestrator.compare.arms import grid_arms
    from orchestrator.errors import ConfigError

    data = {"name": "me", "base_model": "m", "dataset": str(tmp_path), "training": {"steps": 10}}
    arms = grid_arms(data, ["simpletuner"], [("network.rank", [4, 8]), ("training.learning_rate", [1e-4, 5e-5])])
    assert [(a.job.network.rank, a.job.training.learning_rate) for a in arms] == [
        (4, 1e-4), (4, 5e-5), (8, 1e-4), (8, 5e-5)
    ]  # fmt: skip
    assert len({a.job.name for a in arms}) == 4
    with pytest.raises(ConfigError, match="network.rank"):
        grid_arms(data, ["simpletuner"], [("network.rank", [0, 8])])


def test_status_reports_a_failure_on_another_node_of_a_multi_node_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Progress comes from node 0's run; a rank on node 1 that failed is still shown. Slurm's answer is a capture of
    the real local cluster's `scontrol show job`, served by a stand-in scontrol on PATH."""
    import os
    import stat

    from orchestrator.cli import main
    from orchestrator.events import EventLog, Failure, Progress

    monkeypatch.setenv("LORAFORGE_HOME", str(tmp_path / "home"))
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text(f"#!/bin/sh\ncat {FIXTURES / 'scontrol_running.txt'}\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{scontrol.parent}{os.pathsep}{os.environ['PATH']}")
    folder = tmp_path / "submission"
    for node, event in ((folder, Progress(step=7, total=10)), (folder / "node-1", Failure("other", "NCCL timeout"))):
        run = node / "run-folder"
        run.mkdir(parents=True)
        (node / "run").write_text(str(run))
        log = EventLog(run / "events.jsonl")
        log.write(event)
        log.close()
    record_job("7", "slurm", folder)
    assert main(["status", "7"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "RUNNING" in out[0] and "step 7/10" in out[0]
    assert out[1].startswith("node-1: other: NCCL timeout")
