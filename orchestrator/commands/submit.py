"""`loraforge submit JOB --executor slurm`: render an sbatch script and hand the job to Slurm."""

from __future__ import annotations

import argparse
import uuid

from orchestrator.commands.common import add_job_arguments, resolve_job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser, job_required=True)
    parser.add_argument("--executor", choices=["slurm"], default="slurm")
    parser.add_argument("--partition")
    parser.add_argument("--gpus-per-node", type=int, default=1)
    parser.add_argument("--time", help="Slurm time limit, e.g. 01:00:00")
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

    job = resolve_job(args)
    backend = args.backend or "kohya"
    folder = jobs_dir() / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    (folder / "job.yaml").write_text(dump_job(job))
    (folder / "backend").write_text(backend)
    opts = SlurmOptions(args.partition, args.nodes or 1, args.gpus_per_node, args.time, args.requeue)
    (folder / "job.sbatch").write_text(render_sbatch(folder, backend, opts))
    job_id = SlurmExecutor().submit(folder)
    record_job(job_id, "slurm", folder)
    print(job_id)
    return 0
