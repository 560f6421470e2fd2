"""The executor interface and the local job table (cluster job id -> submission folder)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchestrator.envs import home
from orchestrator.errors import LoraforgeError


@dataclass
class JobState:
    job_id: str
    state: str  # the scheduler's own word: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ...
    reason: str = ""
    restarts: int = 0


class Executor(Protocol):
    name: str

    def submit(self, folder: Path) -> str: ...
    def status(self, job_id: str) -> JobState: ...
    def cancel(self, job_id: str) -> None: ...


def jobs_dir() -> Path:
    return home() / "jobs"


def table_path() -> Path:
    return jobs_dir() / "table.json"


def load_table() -> dict[str, dict[str, str]]:
    path = table_path()
    return json.loads(path.read_text()) if path.exists() else {}


def record_job(job_id: str, executor: str, folder: Path) -> None:
    table = load_table()
    table[job_id] = {"executor": executor, "folder": str(folder)}
    table_path().parent.mkdir(parents=True, exist_ok=True)
    tmp = table_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1))
    tmp.replace(table_path())


def lookup(job_id: str) -> dict[str, str]:
    entry = load_table().get(job_id)
    if entry is None:
        raise LoraforgeError(f"no submitted job {job_id} in {table_path()}", "list jobs with `loraforge status`")
    return entry


def run_folder(folder: Path) -> Path | None:
    """The run folder the agent created inside the job (it writes its path to ``run`` once known)."""
    marker = folder / "run"
    return Path(marker.read_text().strip()) if marker.exists() else None
