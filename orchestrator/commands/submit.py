"""`loraforge submit JOB --executor slurm|ray`: hand the job to Slurm (an sbatch script) or to Ray Jobs.

Either way the job runs the same agent (orchestrator/agent.py), which writes the run's events.jsonl, so `status`,
`logs` and `cancel` work the same for both."""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import TYPE_CHECKING

from orchestrator.jobargs import add_job_arguments, job_layers, resolve_job

if TYPE_CHECKING:
    from orchestrator.job import JobSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser, job_required=True)
    from orchestrator.executors import EXECUTORS

    parser.add_argument("--executor", choices=list(EXECUTORS), default="slurm")
    parser.add_argument("--partition", help="Slurm partition")
    parser.add_argument("--gpus-per-node", type=int, default=1, help="GPUs the job asks for on each node")
    parser.add_argument("--time", help="Slurm time limit, e.g. 01:00:00")
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray head's dashboard address, e.g. http://HEAD:8265 (default: $RAY_ADDRESS)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        metavar="K",
        help="Ray: resubmit a job that fails after a checkpoint up to K times, resuming at the saved step "
        "(done by loraforge when it looks at the job: follow it with `logs -f` or --wait)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="follow the job's events until it ends; exit 1 unless it succeeded"
    )
    parser.add_argument(
        "--sweep",
        metavar="FILE",
        help="YAML grid over job fields (network.rank: [8, 16]): one job array task per combination; "
        "report with `loraforge compare --from-job ID`",
    )
    requeue = parser.add_mutually_exclusive_group()
    requeue.add_argument(
        "--requeue",
        action="store_true",
        default=None,
        help="on the time-limit warning, stop and requeue; the job resumes at its last checkpoint",
    )
    requeue.add_argument(
        "--no-requeue",
        dest="requeue",
        action="store_false",
        help="never requeue, not even after a node failure (Slurm requeues batch jobs then by default, and "
        "loraforge resumes them)",
    )


def run(args: argparse.Namespace) -> int:
    from orchestrator.executors.base import jobs_dir, record_job
    from orchestrator.job import dump_job

    check_executor_flags(args)
    ray = None
    if args.executor == "ray":  # reach the head before writing anything: an unreachable address fails first
        from orchestrator.executors.rayjobs import RayExecutor

        ray = RayExecutor()
        ray.client(args.address)
    backend = args.backend or "kohya"
    folder = jobs_dir() / uuid.uuid4().hex[:12]
    if args.sweep:
        jobs = sweep_jobs(args, backend)
        for index, job in enumerate(jobs):  # one folder per array task, named by $SLURM_ARRAY_TASK_ID
            task = folder / "tasks" / str(index)
            task.mkdir(parents=True)
            (task / "job.yaml").write_text(dump_job(job))
            (task / "backend").write_text(backend)
    else:
        folder.mkdir(parents=True)
        (folder / "job.yaml").write_text(dump_job(resolve_job(args)))
        (folder / "backend").write_text(backend)
    tasks = len(jobs) if args.sweep else None
    if ray is not None:
        from orchestrator.executors.rayjobs import RayOptions

        RayOptions(args.address, args.gpus_per_node, args.retries or 0).save(folder)
        job_id = ray.submit(folder)
    else:
        from orchestrator.executors.slurm import SlurmExecutor, SlurmOptions, render_sbatch

        opts = SlurmOptions(args.partition, args.nodes or 1, args.gpus_per_node, args.time, args.requeue, tasks=tasks)
        (folder / "job.sbatch").write_text(render_sbatch(folder, backend, opts))
        job_id = SlurmExecutor().submit(folder)
    record_job(job_id, args.executor, folder, tasks=tasks)
    if args.sweep:
        for index, job in enumerate(jobs):
            print(f"{job_id}_{index} {job.name}", file=sys.stderr)
    print(job_id, flush=True)
    return wait(job_id) if args.wait else 0


def check_executor_flags(args: argparse.Namespace) -> None:
    """Each executor's own flags, refused (with the fix) when given to the other one."""
    from orchestrator.errors import LoraforgeError

    if args.executor == "slurm":
        if args.retries is not None:
            raise LoraforgeError("--retries is for --executor ray", "on Slurm use --requeue: Slurm requeues the job")
        return
    slurm_only = [flag for flag, value in [("--partition", args.partition), ("--time", args.time)] if value]
    slurm_only += ["--requeue"] if args.requeue else ["--no-requeue"] if args.requeue is False else []
    if slurm_only:
        raise LoraforgeError(f"{', '.join(slurm_only)}: Slurm options", "on Ray, retry with --retries K")
    if args.sweep:
        raise LoraforgeError("--sweep runs as a Slurm job array", "use --executor slurm, or submit one job per setting")
    if (args.nodes or 1) > 1:
        raise LoraforgeError(
            "a Ray job runs its entrypoint on one node: --nodes above 1 needs --executor slurm",
            "use --gpus-per-node N on one node, or --executor slurm",
        )
    if args.retries is not None and args.retries < 0:
        raise LoraforgeError(f"--retries {args.retries}: must be 0 or more", "pass --retries 2, say")
    if not args.address:
        raise LoraforgeError(
            "--executor ray needs the Ray head's address", "pass --address http://HEAD:8265, or set RAY_ADDRESS"
        )


def wait(job_id: str) -> int:
    """Follow the job as `logs -f` does (on Ray that is also what carries out --retries), then its end state."""
    from orchestrator.executors.follow import SUCCEEDED, follow_events

    state = follow_events(job_id, follow=True, out=lambda line: print(line, flush=True))
    return 0 if state in SUCCEEDED else 1


def sweep_jobs(args: argparse.Namespace, backend: str) -> list[JobSpec]:
    """The grid of the sweep file over the job, each cell a validated JobSpec (named after its values)."""
    from orchestrator.compare.arms import grid_arms, load_sweep
    from orchestrator.job import merge_layers

    layers, job_file = job_layers(args)
    data = merge_layers(*(layer for _, layer in layers))
    return [arm.job for arm in grid_arms(data, [backend], load_sweep(args.sweep), job_file or "command-line flags")]
