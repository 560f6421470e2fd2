"""The queue with real worker processes (a stand-in for the agent with its contract, training nothing): one job at a
time on CPU, one per GPU with CUDA_VISIBLE_DEVICES, cancel, a worker that dies, retry, continuing a run folder,
a cluster that is not there, and a server restart while a job runs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from web_helpers import call, fake_worker, job_yaml, running_app, wait_for

from orchestrator.errors import LoraforgeError
from orchestrator.events import Finished, Progress, read_events
from orchestrator.runs import RunDir
from orchestrator.web.runner import QueueRunner, process_alive
from orchestrator.web.store import Store


def make_runner(tmp_path: Path, gpus: list[str]) -> QueueRunner:
    store = Store(tmp_path / "state" / "queue.sqlite")
    runner = QueueRunner(store, tmp_path / "state" / "jobs", gpus=gpus, worker=fake_worker(tmp_path), tick_s=0.1)
    runner.start()
    return runner


def ended(runner: QueueRunner, *ids: str) -> bool:
    return all(runner.store.get(i).status not in ("queued", "running") for i in ids)  # type: ignore[union-attr]


def test_on_cpu_jobs_run_one_at_a_time_in_order(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runner = make_runner(tmp_path, [])
    try:
        a = runner.submit(job_yaml(tmp_path, runs, "a", steps=10), "simpletuner", name="a")
        b = runner.submit(job_yaml(tmp_path, runs, "b", steps=10), "simpletuner", name="b")
        wait_for(lambda: runner.store.get(a.id).status == "running", what="a running")  # type: ignore[union-attr]
        assert runner.store.get(b.id).status == "queued"  # type: ignore[union-attr]
        wait_for(lambda: ended(runner, a.id, b.id), what="both jobs to end")
    finally:
        runner.stop()
    a, b = runner.store.get(a.id), runner.store.get(b.id)  # type: ignore[assignment]
    assert (a.status, b.status) == ("finished", "finished")
    assert a.ended <= b.started  # type: ignore[operator]
    for job in (a, b):
        run = RunDir(Path(job.run))  # type: ignore[arg-type]
        assert run.path.parent == runs and run.state()["status"] == "finished"
        assert run.state()["gpus"] is None  # no GPU: CUDA_VISIBLE_DEVICES left alone
        assert [e.step for e in read_events(run.events_file) if isinstance(e, Progress)] == list(range(1, 11))


def test_one_job_per_gpu(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runner = make_runner(tmp_path, ["0", "1"])
    try:
        jobs = [runner.submit(job_yaml(tmp_path, runs, n, steps=20, step_s=0.1), "simpletuner", name=n) for n in "abc"]
        wait_for(lambda: runner.store.get(jobs[1].id).status == "running", what="two jobs at once")  # type: ignore[union-attr]
        assert runner.store.get(jobs[0].id).status == "running"  # type: ignore[union-attr]
        assert runner.store.get(jobs[2].id).status == "queued"  # type: ignore[union-attr]
        wait_for(lambda: ended(runner, *(j.id for j in jobs)), what="all jobs to end")
    finally:
        runner.stop()
    done = [runner.store.get(j.id) for j in jobs]
    assert [j.status for j in done] == ["finished"] * 3  # type: ignore[union-attr]
    assert sorted(j.gpus for j in done[:2]) == ["0", "1"]  # type: ignore[union-attr, type-var]
    assert [RunDir(Path(j.run)).state()["gpus"] for j in done] == [j.gpus for j in done]  # type: ignore[union-attr, arg-type]
    assert done[2].started >= min(done[0].ended, done[1].ended)  # type: ignore[union-attr, operator, type-var]


def test_cancel_a_running_and_a_waiting_job(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runner = make_runner(tmp_path, [])
    try:
        a = runner.submit(job_yaml(tmp_path, runs, "a", steps=400), "simpletuner", name="a")
        b = runner.submit(job_yaml(tmp_path, runs, "b", steps=10), "simpletuner", name="b")
        wait_for(lambda: runner.store.get(a.id).run, what="a's run folder")  # type: ignore[union-attr]
        run = RunDir(Path(runner.store.get(a.id).run))  # type: ignore[arg-type, union-attr]
        wait_for(lambda: any(isinstance(e, Progress) for e in read_events(run.events_file)), what="a step")
        assert runner.cancel(b.id).status == "cancelled"
        pid = runner.store.get(a.id).pid  # type: ignore[union-attr]
        runner.cancel(a.id)
        wait_for(lambda: ended(runner, a.id), what="a to stop")
        time.sleep(0.5)
    finally:
        runner.stop()
    assert runner.store.get(a.id).status == "cancelled"  # type: ignore[union-attr]
    assert run.state()["status"] == "interrupted" and not process_alive(pid, None)
    assert runner.store.get(b.id).run is None  # never started  # type: ignore[union-attr]
    with pytest.raises(LoraforgeError):
        runner.cancel("nonexistent")


def test_a_worker_that_dies_fails_its_job_and_the_queue_goes_on(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runner = make_runner(tmp_path, [])
    try:
        dead = runner.submit(job_yaml(tmp_path, runs, "dies", steps=10, die_at=4), "simpletuner", name="dies")
        after = runner.submit(job_yaml(tmp_path, runs, "after", steps=5), "simpletuner", name="after")
        wait_for(lambda: ended(runner, dead.id, after.id), what="both to end")
        # the run folder keeps what it saw; a new run of the queue continues it where it stopped (the agent's
        # contract for resume: the submission names the run folder)
        run = Path(runner.store.get(dead.id).run)  # type: ignore[arg-type, union-attr]
        again = runner.submit(RunDir(run).job_file.read_text(), "simpletuner", name="dies", run=run)
        wait_for(lambda: ended(runner, again.id), what="the continued run")
        retried = runner.retry(run)
        wait_for(lambda: ended(runner, retried.id), what="the retry")
    finally:
        runner.stop()
    job = runner.store.get(dead.id)
    assert job.status == "failed" and "worker exited with code -9 before the run ended" in job.message  # type: ignore[union-attr, operator]
    assert runner.store.get(after.id).status == "finished"  # type: ignore[union-attr]
    assert runner.store.get(again.id).status == "finished" and runner.store.get(again.id).run == str(run)  # type: ignore[union-attr]
    steps = [e.step for e in read_events(run / "events.jsonl") if isinstance(e, Progress)]
    assert steps == list(range(1, 11))  # 1-4, then 5-10 in the same folder
    fresh = runner.store.get(retried.id)
    assert fresh.status == "failed" and fresh.run != str(run)  # type: ignore[union-attr]  # a new run (and it dies again)


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="Slurm is installed here: this checks its absence")
def test_a_cluster_that_is_not_there_fails_the_job_with_the_reason(tmp_path: Path) -> None:
    runner = make_runner(tmp_path, [])
    try:
        job = runner.submit(job_yaml(tmp_path, tmp_path / "runs"), "simpletuner", name="q", executor="slurm")
        wait_for(lambda: ended(runner, job.id), what="the submission")
    finally:
        runner.stop()
    failed = runner.store.get(job.id)
    assert failed.status == "failed" and "Slurm is not reachable" in failed.message  # type: ignore[union-attr, operator]
    assert (Path(failed.folder) / "job.sbatch").is_file()  # type: ignore[union-attr]
    with pytest.raises(LoraforgeError, match="unknown executor"):
        runner.submit("name: x", "kohya", name="x", executor="kubernetes")


def test_a_server_restart_keeps_the_running_job_and_the_queue(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    worker = fake_worker(tmp_path)
    with running_app(runs, gpus=[], worker=worker) as app:
        a = app.runner.submit(job_yaml(tmp_path, runs, "a", steps=60, step_s=0.1), "simpletuner", name="a")
        b = app.runner.submit(job_yaml(tmp_path, runs, "b", steps=5), "simpletuner", name="b")
        wait_for(lambda: app.store.get(a.id).run, what="a's run folder")  # type: ignore[union-attr]
        wait_for(lambda: (call(app, "GET", "/api/runs").json()["runs"] or [{}])[0].get("step"), what="a step")
        pid = app.store.get(a.id).pid  # type: ignore[union-attr]
    # the server is gone; the worker is not
    assert process_alive(pid, None)
    time.sleep(1.0)
    with running_app(runs, gpus=[], worker=worker) as app:
        rows = call(app, "GET", "/api/runs").json()["runs"]
        assert [(r["name"].split("-")[0], r["status"]) for r in rows] == [("a", "running")]
        first = rows[0]["step"]
        assert first and first > 5
        assert app.store.get(a.id).status == "running" and app.store.get(b.id).status == "queued"  # type: ignore[union-attr]
        wait_for(lambda: call(app, "GET", "/api/runs").json()["runs"][0]["step"] > first, what="progress")
        wait_for(lambda: ended(app.runner, a.id, b.id), timeout=60, what="a, then b")
        assert app.store.get(a.id).status == "finished" and app.store.get(b.id).status == "finished"  # type: ignore[union-attr]
        run_a = RunDir(Path(app.store.get(a.id).run))  # type: ignore[arg-type, union-attr]
        assert isinstance(read_events(run_a.events_file)[-1], Finished)
        assert app.store.get(b.id).started >= app.store.get(a.id).ended  # type: ignore[union-attr, operator]


def test_a_dead_workers_message_is_its_last_error_with_the_fix(tmp_path: Path) -> None:
    from orchestrator.web.runner import last_line

    log = tmp_path / "agent.log"
    log.write_text(
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n    main()\n'
        "orchestrator.errors.BackendNotReady: simpletuner: no environment registered\n"
        "  fix: loraforge setup simpletuner\n"
    )
    assert last_line(log) == (
        "orchestrator.errors.BackendNotReady: simpletuner: no environment registered fix: loraforge setup simpletuner"
    )
    assert last_line(tmp_path / "missing.log") is None
