"""Runs inside a cluster job: the normal loraforge launch for the submission folder's job.yaml.

``python -m orchestrator.agent FOLDER``. The run folder (logs, events.jsonl, checkpoints) goes under the job's
output dir; its path is written to FOLDER/run so `loraforge status/logs` find the same events as a local run.
Multi-node jobs run one agent per node (srun); each launches accelerate with its node's machine rank
(``SLURM_NODEID``) and node 0's address (``MASTER_ADDR``). Progress is read from node 0 (global rank 0); the other
nodes' run folders, under FOLDER/node-N, keep their own ranks' logs, and `status` looks there for failures too.

Preemption (``submit --requeue``): Slurm sends SIGUSR1 ahead of the time limit (``--signal=B:USR1@N``). The agent
stops the trainer the way Ctrl-C does, asks Slurm to requeue the job (``scontrol requeue``: same job id) and exits.
The requeued job starts this agent again on the same folder; it finds the run it made and resumes from the last
saved checkpoint. Neither sd-scripts nor SimpleTuner can be told to save on demand, so the steps since that
checkpoint are trained again: preemptible jobs want a small ``saving.every_n_steps``.

On Ray (orchestrator/executors/rayjobs.py) each retry of ``submit --retries K`` is a new Ray job running this agent
on the same folder: it resumes the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.launch import Child
    from orchestrator.runs import RunDir


def main(argv: list[str]) -> int:
    from orchestrator.executors.base import run_folder
    from orchestrator.job import build_job, load_yaml_layer
    from orchestrator.runs import RunDir, create_run
    from orchestrator.training import run_training

    folder = Path(argv[0])
    job = build_job(load_yaml_layer(folder / "job.yaml"), str(folder / "job.yaml"))
    backend = (folder / "backend").read_text().strip()
    node = int(os.environ.get("SLURM_NODEID", "0"))
    if node:  # multi-node: the run folder (progress, LoRA) is node 0's; the others keep logs of their own ranks
        folder = folder / f"node-{node}"
        folder.mkdir(exist_ok=True)
    previous = run_folder(folder)
    resume = None
    if previous is not None and (previous / "job.yaml").exists():  # requeued (Slurm) or retried (Ray): continue the run
        from orchestrator.resume import find_resume_point

        run = RunDir(previous)
        _, _, resume = find_resume_point(run)
        restarts = int(run.state().get("restarts", 0)) + 1
        run.update_state(restarts=restarts)
        say(run, f"restart {restarts}: resuming at step {resume.step if resume else 0}")
    else:
        run = create_run(job, backend) if not node else create_run(job, backend, root=folder)
        (folder / "run").write_text(str(run.path))

    preempted = Preemption()
    outcome = run_training(job, backend, run=run, resume=resume, on_start=preempted.watch)
    if preempted.requested:
        say(run, "preemption warning: trainer stopped; requeueing the job")
        return preempted.requeue(run.path)
    return 0 if outcome.ok else 1


def say(run: RunDir, text: str) -> None:
    """A line in the job's Slurm output and in the run's events, so `loraforge logs` shows restarts too."""
    from orchestrator.events import EventLog, Log

    print(f"loraforge agent: {text}", flush=True)
    log = EventLog(run.events_file)
    log.write(Log("info", text))
    log.close()


class Preemption:
    """SIGUSR1 (Slurm's time-limit warning) stops the trainer; :meth:`requeue` then hands the job back to Slurm."""

    def __init__(self) -> None:
        self.requested = False
        self.child: Child | None = None
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, self._handle)

    def watch(self, child: Child) -> None:
        self.child = child
        if self.requested:  # the warning came while the trainer was starting
            child.stop()

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        if self.child is not None:
            self.child.stop()

    def requeue(self, run: Path) -> int:
        job_id = os.environ.get("SLURM_JOB_ID")
        if not job_id:
            print("loraforge agent: stopped by SIGUSR1 outside Slurm; resume with `loraforge resume`", flush=True)
            return 1
        proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            print(f"loraforge agent: scontrol requeue {job_id} failed: {proc.stderr.strip()}", flush=True)
            print(f"loraforge agent: resume by hand with `loraforge resume {run}`", flush=True)
            return 1
        print(f"loraforge agent: job {job_id} requeued; it resumes from {run}'s last checkpoint", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
