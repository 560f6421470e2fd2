"""The queue's store: a real SQLite file in WAL mode that keeps jobs, their order and their state across reopening."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from orchestrator.web.store import Store


def test_jobs_keep_their_order_and_state_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    store = Store(path)
    assert store.journal_mode == "wal"
    a = store.add(name="a", backend="simpletuner", executor="local", folder=tmp_path / "a", options={})
    b = store.add(name="b", backend="kohya", executor="slurm", folder=tmp_path / "b", options={"partition": "gpu"})
    store.update(a.id, status="running", pid=123, gpus="0", run=str(tmp_path / "runs" / "a-1"))
    store.close()

    again = Store(path)
    assert [job.name for job in again.jobs()] == ["a", "b"]
    assert [job.name for job in again.jobs("queued")] == ["b"]
    job = again.get(a.id)
    assert job is not None and (job.status, job.pid, job.gpus) == ("running", 123, "0")
    assert again.by_run(tmp_path / "runs" / "a-1") == job
    assert again.get(b.id).option_values == {"partition": "gpu"}  # type: ignore[union-attr]
    assert again.get("nope") is None
    with pytest.raises(ValueError):
        again.update(a.id, not_a_field=1)
    again.close()


def test_writes_from_many_threads_all_land(tmp_path: Path) -> None:
    store = Store(tmp_path / "queue.sqlite")

    def add(n: int) -> None:
        for i in range(20):
            store.add(name=f"{n}-{i}", backend="b", executor="local", folder=tmp_path, options={})

    threads = [threading.Thread(target=add, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.jobs()) == 100
    # another process (sqlite3 here) can read it while the server holds it open: WAL readers never block
    reader = sqlite3.connect(str(tmp_path / "queue.sqlite"))
    assert reader.execute("SELECT count(*) FROM jobs").fetchone()[0] == 100
    reader.close()
    store.close()
