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


def submit_until_checkpoint(st_env, tiny_root: Path, tmp_path: Path, capsys, steps: int, *flags: str):  # type: ignore[no-untyped-def]  # noqa: F811
    """Submit a long tiny SimpleTuner job (a checkpoint every 5 steps) and return (job, job id, submission folder,
    run folder) once its first checkpoint is saved."""
    import time

    from orchestrator.executors.base import lookup, run_folder
    from orchestrator.job import dump_job

    job = tiny_job(st_env, tiny_root, tmp_path, steps=steps)
    job = job.model_copy(update={"saving": job.saving.model_copy(update={"every_n_steps": 5, "keep_last": 2})})
    (tmp_path / "job.yaml").write_text(dump_job(job))
    assert main(["submit", str(tmp_path / "job.yaml"), "--backend", "simpletuner", *flags]) == 0
    job_id = capsys.readouterr().out.strip()
    folder = Path(lookup(job_id)["folder"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        run = run_folder(folder)
        events = run / "events.jsonl" if run is not None else None
        # the agent names its run folder before the run writes its first event
        if events is not None and events.exists() and '"checkpoint"' in events.read_text(errors="replace"):
            return job, job_id, folder, run
        time.sleep(1)
    raise AssertionError(f"job {job_id}: no checkpoint within 5 minutes")


@requires_slurm
def test_preemption_warning_requeues_and_resumes_at_the_saved_step(  # type: ignore[no-untyped-def]
    st_env,  # noqa: F811
    tiny_root: Path,  # noqa: F811
    tmp_path: Path,
    capsys,
) -> None:
    """`submit --requeue`: the time-limit warning (SIGUSR1 to the batch shell, sent here at once with scancel) makes
    the agent stop the trainer and requeue; the same job id starts again (after Slurm's requeue delay, about two
    minutes) and resumes from the last checkpoint to the end, in the same run folder."""
    import subprocess

    from orchestrator.executors.base import run_folder

    job, job_id, folder, _ = submit_until_checkpoint(st_env, tiny_root, tmp_path, capsys, 60, "--requeue")
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True, timeout=30)

    assert main(["logs", "-f", job_id]) == 0  # follows the requeued job to its end, same id
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "finished"
    texts = [e.get("text", "") for e in events]
    stop = next(i for i, t in enumerate(texts) if t.startswith("preemption warning"))
    restart = next(i for i, t in enumerate(texts) if t.startswith("restart 1: resuming at step"))
    resumed_at = int(texts[restart].rsplit(" ", 1)[1])
    before = [e["step"] for e in events[:stop] if e["event"] == "progress"]
    after = [e["step"] for e in events[restart:] if e["event"] == "progress"]
    assert resumed_at == max(e["step"] for e in events[:stop] if e["event"] == "checkpoint") > 0
    assert not any(e["event"] == "failure" and e["kind"] != "interrupted" for e in events[:stop])
    assert before[-1] >= resumed_at and after[0] >= resumed_at  # continues from the saved step, not from 0
    assert after == sorted(after) and after[-1] == 60
    assert main(["status", job_id]) == 0
    line = capsys.readouterr().out
    assert "COMPLETED" in line and "restarts 1" in line and "step 60/60" in line
    run = run_folder(folder)
    assert run is not None and (run / "output" / f"{job.name}.safetensors").exists()
    assert json.loads((run / "run.json").read_text())["resumed_from"] == resumed_at


@requires_slurm
def test_a_node_dying_mid_run_is_reported_and_the_run_keeps_logs_and_checkpoint(  # type: ignore[no-untyped-def]
    st_env,  # noqa: F811
    tiny_root: Path,  # noqa: F811
    tmp_path: Path,
    capsys,
) -> None:
    """The node is taken down under the job (what slurmctld does when a node stops answering). Slurm would requeue
    a batch job by default (and the agent would resume it, as in the preemption test); with --no-requeue the job
    ends NODE_FAIL, `status` says what happened and how to continue, and the run folder keeps logs and checkpoint."""
    import socket
    import subprocess
    import time

    from orchestrator.executors.slurm import SlurmExecutor

    job, job_id, _, run = submit_until_checkpoint(st_env, tiny_root, tmp_path, capsys, 200, "--no-requeue")
    node = socket.gethostname().split(".")[0]
    deadline = time.monotonic() + 300
    try:
        down = ["scontrol", "update", f"NodeName={node}", "State=DOWN", "Reason=loraforge-test"]
        subprocess.run(down, check=True, timeout=30)
        while SlurmExecutor().status(job_id).state not in ("NODE_FAIL", "FAILED") and time.monotonic() < deadline:
            time.sleep(1)
    finally:  # ReturnToService=2 may already have brought it back: then RESUME is refused, harmlessly
        subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], capture_output=True, timeout=30)
    assert main(["status", job_id]) == 0
    out = capsys.readouterr().out
    assert "NODE_FAIL" in out, out
    assert "the node running the job failed" in out and "checkpoint at step" in out and "loraforge resume" in out
    assert (run / "logs" / "stdout.log").stat().st_size > 0 and (run / "events.jsonl").exists()
    from backends.simpletuner import SimpleTunerBackend
    from orchestrator.runs import RunDir

    assert SimpleTunerBackend().collect(job, RunDir(run)).resume is not None  # a complete checkpoint to resume from
    deadline = time.monotonic() + 60  # leave the node idle for the next test
    while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, "node did not come back"
        time.sleep(1)


@requires_slurm
def test_a_sweep_is_one_job_array_gathered_into_one_report(  # type: ignore[no-untyped-def]
    st_env,  # noqa: F811
    tiny_root: Path,  # noqa: F811
    tmp_path: Path,
    capsys,
) -> None:
    from orchestrator.job import dump_job

    job = tiny_job(st_env, tiny_root, tmp_path, steps=2)
    (tmp_path / "job.yaml").write_text(dump_job(job))
    (tmp_path / "sweep.yaml").write_text("network.rank: [4, 8]\n")
    argv = ["submit", str(tmp_path / "job.yaml"), "--backend", "simpletuner", "--sweep", str(tmp_path / "sweep.yaml")]
    assert main(argv) == 0
    job_id = capsys.readouterr().out.strip()
    for task in (f"{job_id}_0", f"{job_id}_1"):
        assert main(["logs", "-f", task]) == 0  # each array task is followed like a job of its own
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert events[-1]["event"] == "finished", events[-3:]
    assert main(["status", job_id]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [[f"{job_id}_0", "COMPLETED"], [f"{job_id}_1", "COMPLETED"]]

    out = tmp_path / "report"
    assert main(["compare", "--from-job", job_id, "-o", str(out), "--json"]) == 0
    report = json.loads((out / "report.json").read_text())
    arms = report["arms"]
    assert len(arms) == 2 and all(arm["status"] == "finished" for arm in arms)
    assert sorted(arm["lora"]["rank"] for arm in arms) == [4, 8]
    assert set(report["differing_settings"]) >= {"network.rank"}
    assert (out / "report.html").stat().st_size > 0
