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
    artifacts = base.get(backend_name).collect(job, run)
    return backend_name, job, artifacts.resume


def resume_run(path: Path, *, json_mode: bool = False, quiet: bool = False, steps: int | None = None) -> int:
    """Continue an interrupted run. A finished run is left as it is, unless ``steps`` asks to train it further
    (to that many steps in all, from its last saved state; its LoRA is replaced at the end)."""
    run = RunDir(path.resolve())
    if not run.path.is_dir():
        raise LoraforgeError(f"run folder {run.path} does not exist", "list runs with `loraforge runs`")
    backend_name, job, point = find_resume_point(run)
    state = run.state()
    if state.get("status") == "finished" and steps is None:
        raise LoraforgeError(
            f"{run.path} finished at step {state.get('step')} and has its LoRA ({state.get('lora')}): nothing to resume",
            f"to train it further, give the new total: loraforge resume {run.path} --steps N (N > {job.training.steps})",
        )
    if steps is not None:
        trained = max(point.step if point else 0, int(state.get("step") or 0))
        if steps <= trained:
            raise LoraforgeError(f"--steps {steps}: the run already trained {trained} steps", "give a larger total")
        job = job.model_copy(update={"training": job.training.model_copy(update={"steps": steps, "epochs": None})})
    if point is None:
        raise LoraforgeError(
            f"{run.path} has no saved training state to resume from",
            "runs keep resumable state when saving.every_n_steps is set; start again with `loraforge train`",
        )
    from orchestrator.display import train_with_display

    return train_with_display(job, backend_name, json_mode=json_mode, quiet=quiet, run=run, resume=point)
