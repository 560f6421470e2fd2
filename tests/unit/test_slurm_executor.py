"""Slurm executor: sbatch rendering, CLI output parsing (captured from the real local cluster), the job table."""

from __future__ import annotations

from pathlib import Path

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
