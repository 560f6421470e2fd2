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


def record_job(job_id: str, executor: str, folder: Path, *, tasks: int | None = None) -> None:
    table = load_table()
    table[job_id] = {"executor": executor, "folder": str(folder)}
    if tasks:
        table[job_id]["tasks"] = str(tasks)
    table_path().parent.mkdir(parents=True, exist_ok=True)
    tmp = table_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1))
    tmp.replace(table_path())


def lookup(job_id: str) -> dict[str, str]:
    """The table entry for a job id; ``ID_N`` is task N of a sweep's job array (its folder is tasks/N)."""
    table = load_table()
    entry = table.get(job_id)
    array, _, task = job_id.partition("_")
    if entry is None and task.isdigit() and int(task) < int(table.get(array, {}).get("tasks", 0)):
        entry = {"executor": table[array]["executor"], "folder": str(Path(table[array]["folder"]) / "tasks" / task)}
    if entry is None:
        raise LoraforgeError(f"no submitted job {job_id} in {table_path()}", "list jobs with `loraforge status`")
    return entry


def array_tasks(job_id: str) -> list[str]:
    """The task ids of a sweep's job array (``ID_0``, ``ID_1``, ...); empty for a single job."""
    tasks = int(load_table().get(job_id, {}).get("tasks", 0))
    return [f"{job_id}_{index}" for index in range(tasks)]


def run_folder(folder: Path) -> Path | None:
    """The run folder the agent created inside the job (it writes its path to ``run`` once known)."""
    marker = folder / "run"
    return Path(marker.read_text().strip()) if marker.exists() else None
