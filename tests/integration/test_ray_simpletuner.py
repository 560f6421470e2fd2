"""Real loraforge jobs through a real local Ray head (two fake GPUs) with the real SimpleTuner backend on the tiny
SDXL model: queueing, status/logs/cancel, a retry that resumes at the saved step, and an unreachable head.

The head is started by this module (``ray start --head --block`` in a short temp dir) and stopped at its end by
signalling that one process, which takes down the Ray processes it started and nothing else on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_simpletuner_tiny import st_env, tiny_job, tiny_root  # noqa: F401 (fixtures)

from orchestrator.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.integration]

requires_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="ray is not installed: pip install -e '.[ray]' (CI installs the ray extra in .ci/run)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A one-node Ray cluster with two fake GPUs; yields its dashboard (Jobs API) address."""
    temp = Path(tempfile.mkdtemp(prefix="lfray-", dir="/tmp"))  # short: Ray's unix sockets live under it
    dashboard = _free_port()
    argv = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        "--num-gpus=2",
        "--num-cpus=2",
        f"--temp-dir={temp}",
        f"--port={_free_port()}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--ray-client-server-port={_free_port()}",
        "--disable-usage-stats",
    ]
    # The machine is shared: Ray's memory monitor would kill a job's processes when others fill the RAM.
    env = {**os.environ, "RAY_memory_monitor_refresh_ms": "0"}
    log = (temp / "head.log").open("wb")
    head = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=5):
                    break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    tail = (temp / "head.log").read_text(errors="replace")[-3000:]
                    pytest.fail(f"the local Ray head did not start:\n{tail}")
                time.sleep(1)
        yield address
    finally:
        _stop_jobs(address)
        head.send_signal(signal.SIGTERM)  # `ray start --block` then stops the raylet, GCS and dashboard it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _stop_jobs(address: str) -> None:
    """Stop the jobs a failed test left running: Ray then signals every process under each entrypoint, including
    trainers in their own session, which stopping the head alone would orphan."""
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
        live = [j.submission_id for j in client.list_jobs() if not j.status.is_terminal()]
        for submission_id in live:
            client.stop_job(submission_id)
        deadline = time.monotonic() + 30
        while live and time.monotonic() < deadline:
            live = [i for i in live if not client.get_job_info(i).status.is_terminal()]
            time.sleep(1)
    except Exception as exc:  # the head may be gone already; stopping it is what matters next
        print(f"could not stop the Ray jobs: {exc}")


def _submit(st_env, tiny_root: Path, where: Path, address: str, capsys, *, steps: int, every: int, flags=()):  # type: ignore[no-untyped-def]  # noqa: F811
    from orchestrator.executors.base import lookup
    from orchestrator.job import dump_job

    where.mkdir()
    job = tiny_job(st_env, tiny_root, where, steps=steps)
    job = job.model_copy(update={"saving": job.saving.model_copy(update={"every_n_steps": every, "keep_last": 2})})
    (where / "job.yaml").write_text(dump_job(job))
    argv = ["submit", str(where / "job.yaml"), "--backend", "simpletuner", "--executor", "ray", "--address", address]
    assert main([*argv, *flags]) == 0
    job_id = capsys.readouterr().out.strip()
    return job, job_id, Path(lookup(job_id)["folder"])


def _status(job_id: str, capsys) -> str:  # type: ignore[no-untyped-def]
    assert main(["status", job_id]) == 0
    return str(capsys.readouterr().out.strip())


def _events(job_id: str, capsys) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    assert main(["logs", "-f", job_id]) == 0  # returns once the job (and any retry) has ended
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _agent_tree(folder: Path) -> list[int]:
    """The pids of the job's agent and everything under it (the trainer runs in its own session, still a child)."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "orchestrator.agent" in cmdline and str(folder) in cmdline:
            return [proc.pid, *(child.pid for child in proc.children(recursive=True))]
    return []


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@requires_ray
def test_three_one_gpu_jobs_on_two_gpus_with_status_logs_and_cancel(  # type: ignore[no-untyped-def]
    ray_head: str,
    st_env,  # noqa: F811
    tiny_root: Path,  # noqa: F811
    tmp_path: Path,
    capsys,
) -> None:
    jobs = [_submit(st_env, tiny_root, tmp_path / f"j{i}", ray_head, capsys, steps=4, every=2) for i in range(3)]
    ids = [job_id for _, job_id, _ in jobs]
    deadline = time.monotonic() + 120
    while True:
        lines = {job_id: _status(job_id, capsys) for job_id in ids}
        states = {job_id: line.split()[1] for job_id, line in lines.items()}
        if sorted(states.values()) == ["PENDING", "RUNNING", "RUNNING"]:
            break
        assert time.monotonic() < deadline, lines
        time.sleep(1)
    waiting = next(job_id for job_id in ids if states[job_id] == "PENDING")
    assert "(waiting for resources: 1 GPU)" in lines[waiting], lines[waiting]

    victim = next(job_id for job_id in ids if states[job_id] == "RUNNING")
    victim_folder = next(folder for _, job_id, folder in jobs if job_id == victim)
    while len(tree := _agent_tree(victim_folder)) < 2:  # cancel a job whose agent and trainer are running
        assert time.monotonic() < deadline, "the agent never started its trainer"
        time.sleep(0.5)
    assert main(["cancel", victim]) == 0
    assert f"cancelled {victim}" in capsys.readouterr().out

    for job, job_id, _ in jobs:
        if job_id == victim:
            continue
        events = _events(job_id, capsys)  # the waiting job starts once the cancelled one frees its GPU
        steps = [e["step"] for e in events if e["event"] == "progress"]
        assert steps[-1] == 4 and steps == sorted(steps), steps
        assert [e["step"] for e in events if e["event"] == "checkpoint"] == [2, 4]
        assert events[-1]["event"] == "finished"
        line = _status(job_id, capsys)
        assert " SUCCEEDED" in line and "step 4/4" in line, line
        run = Path(line.split(" run ")[1])
        assert (run / "output" / f"{job.name}.safetensors").exists()

    deadline = time.monotonic() + 60
    while " STOPPED" not in (line := _status(victim, capsys)):
        assert time.monotonic() < deadline, line
        time.sleep(1)
    alive = [pid for pid in tree if _alive(pid)]
    assert not alive, alive  # Ray stopped the agent and the trainer under it (in its own session)


@requires_ray
def test_a_job_killed_after_a_checkpoint_is_resubmitted_and_resumes_at_the_saved_step(  # type: ignore[no-untyped-def]
    ray_head: str,
    st_env,  # noqa: F811
    tiny_root: Path,  # noqa: F811
    tmp_path: Path,
    capsys,
) -> None:
    """`--retries 1`: every process of the job is SIGKILLed once a checkpoint is saved (what a node death does).
    Ray marks the attempt FAILED; `logs -f` (loraforge's watcher) resubmits it and the agent resumes the same run
    at the saved step."""
    from orchestrator.executors.base import run_folder
    from orchestrator.executors.rayjobs import connect

    steps = 12
    flags = ("--retries", "1")
    job, job_id, folder = _submit(
        st_env, tiny_root, tmp_path / "j", ray_head, capsys, steps=steps, every=3, flags=flags
    )
    deadline = time.monotonic() + 300
    while True:
        run = run_folder(folder)
        events_file = run / "events.jsonl" if run is not None else None
        if events_file is not None and events_file.exists() and '"checkpoint"' in events_file.read_text("utf-8"):
            break
        assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.5)
    pids = _agent_tree(folder)
    assert len(pids) >= 2, pids  # the agent and its trainer
    for pid in pids:
        os.kill(pid, signal.SIGKILL)

    events = _events(job_id, capsys)
    texts = [e.get("text", "") for e in events]
    restart = next(i for i, t in enumerate(texts) if t.startswith("restart 1: resuming at step"))
    resumed_at = int(texts[restart].rsplit(" ", 1)[1])
    saved = [e["step"] for e in events[:restart] if e["event"] == "checkpoint"]
    assert resumed_at == max(saved) > 0  # the last checkpoint saved before the kill
    before = [e["step"] for e in events[:restart] if e["event"] == "progress"]
    after = [e["step"] for e in events[restart:] if e["event"] == "progress"]
    assert before[-1] >= resumed_at and after[0] >= resumed_at  # continues from the saved step, not from 0
    assert after == sorted(after) and after[-1] == steps
    assert events[-1]["event"] == "finished"

    line = _status(job_id, capsys)
    assert " SUCCEEDED" in line and "restarts 1" in line and f"step {steps}/{steps}" in line, line
    client = connect(ray_head)
    assert client.get_job_info(job_id).status.value == "FAILED"  # attempt 0, killed
    assert client.get_job_info(f"{job_id}-r1").entrypoint == client.get_job_info(job_id).entrypoint
    run = run_folder(folder)
    assert run is not None and (run / "output" / f"{job.name}.safetensors").exists()
    assert json.loads((run / "run.json").read_text())["resumed_from"] == resumed_at


@requires_ray
def test_an_unreachable_head_is_a_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "job.yaml").write_text("name: x\n")
    address = f"http://127.0.0.1:{_free_port()}"
    assert main(["submit", str(tmp_path / "job.yaml"), "--executor", "ray", "--address", address]) == 2  # no job
    err = capsys.readouterr().err
    assert f"Ray is not reachable at {address}" in err and "ray start --head" in err, err
