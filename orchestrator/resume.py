"""Resume: continue an interrupted run in the same run folder, from the backend's last saved state."""

from __future__ import annotations

from pathlib import Path

from backends import base
from orchestrator.errors import LoraforgeError
from orchestrator.runs import RunDir


def find_resume_point(run: RunDir):  # type: ignore[no-untyped-def]
    backend_name = str(run.state().get("backend", ""))
    if not backend_name:
        raise LoraforgeError(
            f"{run.path} has no run.json naming its backend", "pass a folder made by `loraforge train`"
        )
    job = run.load_job()
    artifacts = base.get(backend_name).collect(job, run.path)
    return backend_name, job, artifacts.resume


def resume_run(path: Path, *, json_mode: bool = False, quiet: bool = False) -> int:
    run = RunDir(path.resolve())
    backend_name, job, point = find_resume_point(run)
    if point is None:
        raise LoraforgeError(
            f"{run.path} has no saved training state to resume from",
            "runs keep resumable state when saving.every_n_steps is set; start again with `loraforge train`",
        )
    from orchestrator.commands.train import train_and_report

    return train_and_report(job, backend_name, json_mode=json_mode, quiet=quiet, run=run, resume=point)
