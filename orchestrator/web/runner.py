"""The queue: jobs wait in the store and run one per GPU on this machine (one at a time on CPU), or go to Slurm or Ray.

A job is a submission folder like the one ``loraforge submit`` writes (job.yaml and backend), and its worker is the
agent that runs inside a Slurm or Ray job (``python -m orchestrator.agent FOLDER``): it makes the run folder under
the job's output dir, writes its path to FOLDER/run and trains through ``run_training``, which writes events.jsonl
and run.json. Started again on the same folder, the agent resumes that run from its last checkpoint: the queue's
*resume* is exactly that. *Retry* queues the same job.yaml afresh, as a new run.

A local worker runs in its own session with its output in FOLDER/agent.log, so it outlives the server: stop or
kill the server and the training goes on. Started again, the server finds the worker by its process id and start
time, shows it running (progress from events.jsonl) and starts the next job when it ends. How a job ended is read
from its run folder, which only the trainer's run writes; the store records it.

Cancel sends the worker SIGTERM: the trainer is stopped the way Ctrl-C stops it (SIGINT to its process group, then
SIGTERM, then SIGKILL); the worker itself gets SIGKILL if it is still there after ``KILL_AFTER_S``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.errors import LoraforgeError
from orchestrator.runs import RunDir
from orchestrator.web.store import QueueJob, Store

log = logging.getLogger("loraforge.web")

REPO = Path(__file__).resolve().parents[2]
AGENT = (sys.executable, "-m", "orchestrator.agent")
KILL_AFTER_S = 45.0
CLUSTER_POLL_S = 10.0
ENDED = ("finished", "failed", "interrupted")
# The scheduler's word for a job that ended, and what the queue calls it (anything else: still running).
CLUSTER_ENDS = {
    "COMPLETED": "finished",
    "SUCCEEDED": "finished",
    "CANCELLED": "cancelled",
    "STOPPED": "cancelled",
    "FAILED": "failed",
    "TIMEOUT": "failed",
    "NODE_FAIL": "failed",
    "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
    "UNKNOWN": "failed",
}


def process_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, Linux): with the pid, it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def process_alive(pid: int | None, start: str | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True  # no /proc: the signal check is all there is
    return state != "Z" and (start is None or process_start(pid) == start)


class QueueRunner:
    """Starts, watches and ends the store's jobs; one thread, a tick a second."""

    def __init__(
        self,
        store: Store,
        jobs_dir: Path,
        *,
        gpus: Sequence[str],
        worker: Sequence[str] = AGENT,
        tick_s: float = 1.0,
    ) -> None:
        self.store = store
        self.jobs_dir = jobs_dir
        self.gpus = list(gpus)
        self.worker = list(worker)
        self.tick_s = tick_s
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._polled: dict[str, float] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the thread -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.tick()
        self._thread = threading.Thread(target=self._loop, name="queue", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching. Running workers are left running: a server started later picks them up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception:  # the queue must outlive any one bad job; the error goes to the server's log
                log.exception("queue tick failed")

    def tick(self) -> None:
        with self._lock:
            for job in self.store.jobs("running"):
                if job.executor == "local":
                    self._check_local(job)
                elif time.monotonic() - self._polled.get(job.id, 0.0) >= CLUSTER_POLL_S:
                    self._check_cluster(job)
            for job in self.store.jobs("queued"):
                if job.executor != "local":
                    self._submit_cluster(job)
                    continue
                gpus = self._free_gpus(job.gpus_needed)
                if gpus is None:
                    break  # first come, first served: the first waiting job holds the ones behind it
                self._launch_local(job, gpus)

    # --- adding jobs ------------------------------------------------------------------------------------------
    def submit(
        self,
        job_yaml: str,
        backend: str,
        *,
        name: str,
        gpus_needed: int = 1,
        executor: str = "local",
        options: dict[str, Any] | None = None,
        run: Path | None = None,
    ) -> QueueJob:
        """Queue a job (its resolved job.yaml text). With ``run``, the agent resumes that run folder."""
        if executor not in ("local", "slurm", "ray"):
            raise LoraforgeError(f"unknown executor {executor!r}", "choose local, slurm or ray")
        if executor == "local" and self.gpus and gpus_needed > len(self.gpus):
            raise LoraforgeError(
                f"the job asks for {gpus_needed} GPUs; this machine has {len(self.gpus)}",
                "lower distributed.gpus, or send it to a cluster",
            )
        folder = self.jobs_dir / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True)
        (folder / "job.yaml").write_text(job_yaml, encoding="utf-8")
        (folder / "backend").write_text(backend, encoding="utf-8")
        if run is not None:
            (folder / "run").write_text(str(run), encoding="utf-8")  # the agent resumes what this names
        with self._lock:
            job = self.store.add(
                name=name,
                backend=backend,
                executor=executor,
                folder=folder,
                options=options or {},
                gpus_needed=gpus_needed,
            )
            if run is not None:
                self.store.update(job.id, run=str(run))
        return self.store.get(job.id) or job

    def resume(self, run: Path) -> QueueJob:
        """Queue the run folder ``run`` to continue from its last checkpoint (any run: the app's or the CLI's)."""
        from orchestrator.resume import find_resume_point

        self._refuse_if_active(run)
        backend, _, point = find_resume_point(RunDir(run))
        if point is None:
            raise LoraforgeError(
                f"{run.name} has no saved training state to resume from",
                "runs keep resumable state when saving.every_n_steps is set; retry starts it again",
            )
        previous = self.store.by_run(run)
        executor, options = (previous.executor, previous.option_values) if previous else ("local", {})
        job_yaml = RunDir(run).job_file.read_text(encoding="utf-8")
        return self.submit(
            job_yaml,
            backend,
            name=run.name,
            executor=executor,
            options=options,
            run=run,
            gpus_needed=previous.gpus_needed if previous else 1,
        )

    def retry(self, run: Path) -> QueueJob:
        """Queue the run's job again from the start, as a new run."""
        state = RunDir(run).state()
        backend = str(state.get("backend") or "")
        if not backend:
            raise LoraforgeError(f"{run.name} has no run.json naming its backend", "start a new job instead")
        previous = self.store.by_run(run)
        executor, options = (previous.executor, previous.option_values) if previous else ("local", {})
        job = RunDir(run).load_job()
        return self.submit(
            RunDir(run).job_file.read_text(encoding="utf-8"),
            backend,
            name=job.name,
            executor=executor,
            options=options,
            gpus_needed=job.distributed.gpus,
        )

    def cancel(self, job_id: str) -> QueueJob:
        with self._lock:
            job = self.store.get(job_id)
            if job is None:
                raise LoraforgeError(f"no queued job {job_id}")
            if job.status == "queued":
                self.store.update(job.id, status="cancelled", ended=time.time(), message="cancelled before it started")
            elif job.status == "running":
                self.store.update(job.id, cancel_requested=int(time.time()), message="stopping")
                if job.executor == "local":
                    if process_alive(job.pid, job.pid_start):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(job.pid or 0, signal.SIGTERM)
                elif job.cluster_id:
                    from orchestrator.executors import get

                    get(job.executor).cancel(job.cluster_id)
            return self.store.get(job.id) or job

    def _refuse_if_active(self, run: Path) -> None:
        for job in self.store.jobs("queued", "running"):
            if job.run == str(run):
                raise LoraforgeError(f"{run.name} is already {job.status} in the queue", "cancel it first")

    # --- local workers ----------------------------------------------------------------------------------------
    def _free_gpus(self, needed: int) -> list[str] | None:
        """GPUs for a job that needs ``needed``, or None while they are busy. No GPUs: one job at a time."""
        running = [job for job in self.store.jobs("running") if job.executor == "local"]
        if not self.gpus:
            return [] if not running else None
        busy = {gpu for job in running for gpu in (job.gpus or "").split(",") if gpu}
        free = [gpu for gpu in self.gpus if gpu not in busy]
        return free[:needed] if len(free) >= needed else None

    def _launch_local(self, job: QueueJob, gpus: list[str]) -> None:
        folder = Path(job.folder)
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        with (folder / "agent.log").open("ab") as output:
            child = subprocess.Popen(
                [*self.worker, str(folder)],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not stopped by the server's Ctrl-C, not killed with it
            )
        self._children[job.id] = child
        self.store.update(
            job.id,
            status="running",
            pid=child.pid,
            pid_start=process_start(child.pid),
            gpus=",".join(gpus),
            started=time.time(),
            ended=None,
            attempts=job.attempts + 1,
            message=None,
        )

    def _check_local(self, job: QueueJob) -> None:
        child = self._children.get(job.id)
        code = child.poll() if child is not None else None
        alive = code is None if child is not None else process_alive(job.pid, job.pid_start)
        run = self._note_run(job)
        if alive:
            if job.cancel_requested and time.time() - job.cancel_requested > KILL_AFTER_S:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job.pid or 0, signal.SIGKILL)
            return
        self._children.pop(job.id, None)
        self._end(job, run, f"the worker exited with code {code}" if code is not None else "the worker is gone")

    # --- cluster jobs -----------------------------------------------------------------------------------------
    def _submit_cluster(self, job: QueueJob) -> None:
        from orchestrator.executors.base import record_job

        folder, options = Path(job.folder), job.option_values
        gpus = int(options.get("gpus") or job.gpus_needed or 1)
        try:
            if job.executor == "slurm":
                from orchestrator.executors.slurm import SlurmExecutor, SlurmOptions, render_sbatch

                slurm = SlurmOptions(options.get("partition") or None, 1, gpus, options.get("time") or None)
                (folder / "job.sbatch").write_text(render_sbatch(folder, job.backend, slurm), encoding="utf-8")
                cluster_id = SlurmExecutor().submit(folder)
            else:
                from orchestrator.executors.rayjobs import RayExecutor, RayOptions

                address = options.get("address") or os.environ.get("RAY_ADDRESS")
                if not address:
                    raise LoraforgeError("a Ray job needs the head's address", "fill in the Ray address")
                RayOptions(address, gpus, int(options.get("retries") or 0)).save(folder)
                cluster_id = RayExecutor().submit(folder)
        except LoraforgeError as exc:
            self.store.update(job.id, status="failed", ended=time.time(), message=str(exc))
            return
        record_job(cluster_id, job.executor, folder)  # `loraforge status/logs/cancel ID` know it too
        self.store.update(
            job.id,
            status="running",
            cluster_id=cluster_id,
            started=time.time(),
            attempts=job.attempts + 1,
            message=f"submitted to {job.executor} as {cluster_id}",
        )

    def _check_cluster(self, job: QueueJob) -> None:
        from orchestrator.executors import get

        self._polled[job.id] = time.monotonic()
        run = self._note_run(job)
        try:
            state = get(job.executor).status(job.cluster_id or "")
        except LoraforgeError as exc:
            self.store.update(job.id, message=f"cannot reach {job.executor}: {exc.message}")
            return
        end = CLUSTER_ENDS.get(state.state)
        if end is None:
            self.store.update(job.id, message=f"{job.executor} {state.state} {state.reason}".strip())
            return
        self._end(job, run, f"{job.executor} says {state.state} {state.reason}".strip(), cluster_end=end)

    # --- endings ----------------------------------------------------------------------------------------------
    def _note_run(self, job: QueueJob) -> Path | None:
        from orchestrator.executors.base import run_folder

        run = run_folder(Path(job.folder))
        if run is not None and job.run != str(run):
            self.store.update(job.id, run=str(run))
        return run

    def _end(self, job: QueueJob, run: Path | None, how: str, *, cluster_end: str | None = None) -> None:
        """Record how the job ended, from its run folder's run.json (what the trainer's run wrote)."""
        status = str(RunDir(run).state().get("status", "")) if run else ""
        message = None
        if job.cancel_requested or (cluster_end == "cancelled" and status not in ENDED):
            status, message = "cancelled", "cancelled"
        elif status not in ENDED:
            status = "failed"
            message = f"{how} before the run ended: {last_line(Path(job.folder) / 'agent.log') or 'no output'}"
        self.store.update(job.id, status=status, ended=time.time(), message=message)


def last_line(path: Path, size: int = 4096) -> str | None:
    """The end of a log in one line: its last unindented line and the indented ones after it (the agent's
    exception with its ``fix:`` line, when it died of one)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            lines = [line.rstrip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return None
    if not lines:
        return None
    start = max((i for i, line in enumerate(lines) if not line[:1].isspace()), default=len(lines) - 1)
    return " ".join(line.strip() for line in lines[start:])
