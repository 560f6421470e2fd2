"""The queue's store: one SQLite file in WAL mode, written by the server only.

A trainer never writes it (it writes its run folder: run.json, events.jsonl), so a trainer that crashes can never
leave the store half-updated: the server reads how a run ended from the run folder and records it here. The store
holds what only the server knows: which jobs wait, in which order, on which GPUs they run, the worker's process id,
a cluster job id, and whether someone asked to cancel.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    name TEXT NOT NULL,
    backend TEXT NOT NULL,
    executor TEXT NOT NULL,               -- local | slurm | ray
    options TEXT NOT NULL DEFAULT '{}',   -- the executor's options, JSON
    folder TEXT NOT NULL,                 -- submission folder: job.yaml + backend, what the agent reads
    gpus_needed INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL,                 -- see STATUSES
    gpus TEXT,                            -- CUDA_VISIBLE_DEVICES given to a local job ('' on CPU)
    pid INTEGER,                          -- the local agent's process id ...
    pid_start TEXT,                       -- ... and its start time (tells a reused pid apart)
    cluster_id TEXT,                      -- the Slurm or Ray job id
    run TEXT,                             -- the run folder, once the agent made it
    message TEXT,
    started REAL,
    ended REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0
)
"""

# queued: waits for a GPU (or the CPU); running: its worker runs (or the cluster runs it); the rest are ends.
STATUSES = ("queued", "running", "finished", "failed", "interrupted", "cancelled")
ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class QueueJob:
    id: str
    created: float
    name: str
    backend: str
    executor: str
    options: str
    folder: str
    gpus_needed: int
    status: str
    gpus: str | None
    pid: int | None
    pid_start: str | None
    cluster_id: str | None
    run: str | None
    message: str | None
    started: float | None
    ended: float | None
    attempts: int
    cancel_requested: int

    @property
    def option_values(self) -> dict[str, Any]:
        return dict(json.loads(self.options or "{}"))

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["options"] = self.option_values
        data["run_name"] = Path(self.run).name if self.run else None
        return data


_COLUMNS = [f.name for f in fields(QueueJob)]


class Store:
    """Thread-safe: one connection behind a lock (the server's request threads and the queue thread share it)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)

    @property
    def journal_mode(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    def add(
        self, *, name: str, backend: str, executor: str, folder: Path, options: dict[str, Any], gpus_needed: int = 1
    ) -> QueueJob:
        job_id = uuid.uuid4().hex[:12]
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, created, name, backend, executor, options, folder, gpus_needed, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued')",
                (job_id, time.time(), name, backend, executor, json.dumps(options), str(folder), gpus_needed),
            )
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> QueueJob | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return QueueJob(*row) if row else None

    def jobs(self, *statuses: str) -> list[QueueJob]:
        """Jobs in the order they were queued; only those with one of ``statuses`` when given."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM jobs"
        if statuses:
            query += f" WHERE status IN ({', '.join('?' for _ in statuses)})"
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created, rowid", statuses).fetchall()
        return [QueueJob(*row) for row in rows]

    def by_run(self, run: Path) -> QueueJob | None:
        """The newest job that ran (or resumes) the run folder ``run``."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE run = ? ORDER BY created DESC LIMIT 1", (str(run),)
            ).fetchone()
        return QueueJob(*row) if row else None

    def update(self, job_id: str, **values: Any) -> None:
        unknown = set(values) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        assignments = ", ".join(f"{key} = ?" for key in values)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values.values(), job_id))

    def close(self) -> None:
        with self._lock:
            self._db.close()
