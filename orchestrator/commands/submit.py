"""`loraforge submit JOB --executor slurm`: render an sbatch script and hand the job to Slurm."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import TYPE_CHECKING

from orchestrator.commands.common import add_job_arguments, job_layers, resolve_job

if TYPE_CHECKING:
    from orchestrator.job import JobSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser, job_required=True)
    parser.add_argument("--executor", choices=["slurm"], default="slurm")
    parser.add_argument("--partition")
    parser.add_argument("--gpus-per-node", type=int, default=1)
    parser.add_argument("--time", help="Slurm time limit, e.g. 01:00:00")
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
    from orchestrator.executors.slurm import SlurmExecutor, SlurmOptions, render_sbatch
    from orchestrator.job import dump_job

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
    opts = SlurmOptions(args.partition, args.nodes or 1, args.gpus_per_node, args.time, args.requeue, tasks=tasks)
    (folder / "job.sbatch").write_text(render_sbatch(folder, backend, opts))
    job_id = SlurmExecutor().submit(folder)
    record_job(job_id, "slurm", folder, tasks=tasks)
    if args.sweep:
        for index, job in enumerate(jobs):
            print(f"{job_id}_{index} {job.name}", file=sys.stderr)
    print(job_id)
    return 0


def sweep_jobs(args: argparse.Namespace, backend: str) -> list[JobSpec]:
    """The grid of the sweep file over the job, each cell a validated JobSpec (named after its values)."""
    from orchestrator.compare.arms import grid_arms, load_sweep
    from orchestrator.job import merge_layers

    layers, job_file = job_layers(args)
    data = merge_layers(*(layer for _, layer in layers))
    return [arm.job for arm in grid_arms(data, [backend], load_sweep(args.sweep), job_file or "command-line flags")]
