"""Cluster executors: hand a loraforge job to an existing scheduler (Slurm, Ray). No home-made queue."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.executors.base import Executor

# name -> (module, class); a module is imported only when its executor is used (ray is an optional extra)
EXECUTORS: dict[str, tuple[str, str]] = {
    "slurm": ("orchestrator.executors.slurm", "SlurmExecutor"),
    "ray": ("orchestrator.executors.rayjobs", "RayExecutor"),
}


def get(name: str) -> Executor:
    if name not in EXECUTORS:
        from orchestrator.errors import LoraforgeError

        raise LoraforgeError(f"unknown executor {name!r}", f"choose between {', '.join(EXECUTORS)}")
    module, cls = EXECUTORS[name]
    return getattr(importlib.import_module(module), cls)()  # type: ignore[no-any-return]


def for_job(job_id: str) -> Executor:
    """The executor that ran ``job_id``, from the job table."""
    from orchestrator.executors.base import lookup

    return get(lookup(job_id)["executor"])
