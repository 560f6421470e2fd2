"""Real local Slurm cluster (ci/slurm-up.sh up): three one-GPU jobs on two fake GPUs, sbatch rejection."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.errors import LoraforgeError
from orchestrator.executors.slurm import SlurmExecutor

pytestmark = [pytest.mark.slurm, pytest.mark.integration]


def _reachable() -> bool:
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0


requires_slurm = pytest.mark.skipif(not _reachable(), reason="no Slurm cluster: run `sudo ci/slurm-up.sh up`")


def _folder(tmp_path: Path, name: str, partition: str | None = None) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    ready = tmp_path / f"{name}.started"
    extra = f"#SBATCH --partition={partition}\n" if partition else ""
    (folder / "job.sbatch").write_text(
        f"#!/bin/bash\n#SBATCH --gres=gpu:1\n#SBATCH --output={folder}/slurm-%j.out\n{extra}"
        f"echo gpus=$SLURM_GPUS_ON_NODE; touch {ready}; sleep 120\n"
    )
    return folder


@requires_slurm
def test_three_one_gpu_jobs_on_two_gpus_one_waits(tmp_path: Path) -> None:
    ex = SlurmExecutor()
    ids = [ex.submit(_folder(tmp_path, f"j{i}")) for i in range(3)]
    try:
        deadline = time.monotonic() + 60
        while sum((tmp_path / f"j{i}.started").exists() for i in range(3)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        states = [ex.status(job_id).state for job_id in ids]
        assert sorted(states) == ["PENDING", "RUNNING", "RUNNING"], states
        pending = ids[states.index("PENDING")]
        assert ex.status(pending).reason in ("Resources", "Priority")
    finally:
        for job_id in ids:
            ex.cancel(job_id)


@requires_slurm
def test_sbatch_rejects_invalid_partition(tmp_path: Path) -> None:
    with pytest.raises(LoraforgeError, match="invalid partition|Invalid partition"):
        SlurmExecutor().submit(_folder(tmp_path, "bad", partition="nosuch"))


def test_slurm_not_reachable_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LoraforgeError, match="Slurm is not reachable") as info:
        SlurmExecutor().submit(tmp_path)
    assert "ci/slurm-up.sh up" in (info.value.hint or "")


@requires_slurm
def test_cancel_and_status_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli import main
    from orchestrator.executors.base import record_job

    folder = _folder(tmp_path, "c")
    job_id = SlurmExecutor().submit(folder)
    record_job(job_id, "slurm", folder)
    assert main(["cancel", job_id]) == 0
    deadline = time.monotonic() + 60  # a running job passes through COMPLETING before CANCELLED
    while SlurmExecutor().status(job_id).state != "CANCELLED" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert main(["status", job_id]) == 0
    out = capsys.readouterr().out
    assert f"cancelled {job_id}" in out and "CANCELLED" in out
