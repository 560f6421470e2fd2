"""A real loraforge job through the local Slurm cluster with the real SimpleTuner backend on the tiny SDXL model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_simpletuner_tiny import st_env, tiny_job, tiny_root  # noqa: F401 (fixtures)
from test_slurm_cluster import requires_slurm

from orchestrator.cli import main

pytestmark = [pytest.mark.slurm, pytest.mark.integration]


@requires_slurm
def test_submit_status_logs_through_slurm(st_env, tiny_root: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from orchestrator.job import dump_job

    job = tiny_job(st_env, tiny_root, tmp_path, steps=6)
    (tmp_path / "job.yaml").write_text(dump_job(job))
    assert main(["submit", str(tmp_path / "job.yaml"), "--backend", "simpletuner"]) == 0
    job_id = capsys.readouterr().out.strip()
    assert main(["logs", "-f", job_id]) == 0  # returns once Slurm says the job ended
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    steps = [e["step"] for e in events if e["event"] == "progress"]
    assert steps[-1] == 6 and steps == sorted(steps)  # one progress stream
    assert any(e["event"] == "checkpoint" for e in events)
    assert events[-1]["event"] == "finished"
    assert main(["status", job_id]) == 0
    line = capsys.readouterr().out
    assert "COMPLETED" in line and "step 6/6" in line
    run = Path(line.split(" run ")[1].strip())
    assert (run / "output" / f"{job.name}.safetensors").exists()
    assert yaml.safe_load((run / "job.yaml").read_text())["name"] == job.name
