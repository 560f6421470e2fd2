"""Slurm through its plain CLI: sbatch --parsable, squeue, scontrol, scancel (no pyslurm: version-locked)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import LoraforgeError
from orchestrator.executors.base import JobState

UP_HINT = "start a local cluster with `sudo ci/slurm-up.sh up`, or run on a Slurm login node"


@dataclass
class SlurmOptions:
    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 1
    time: str | None = None
    requeue: bool | None = None  # True: requeue on the time-limit warning; False: never; None: the cluster's default
    signal_seconds: int = 120
    tasks: int | None = None  # a job array of this many tasks (a sweep), each with its own job in tasks/<index>/


def render_sbatch(folder: Path, backend: str, opts: SlurmOptions, *, python: str = sys.executable) -> str:
    from orchestrator.render import render_template

    return render_template(
        "slurm/job.sbatch.j2",
        folder=str(folder),
        backend=backend,
        opts=opts,
        python=python,
        repo=str(Path(__file__).resolve().parents[2]),
    )


def _cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        raise LoraforgeError(f"Slurm is not reachable: `{argv[0]}` is not on PATH", UP_HINT)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def parse_parsable(stdout: str) -> str:
    """``sbatch --parsable`` prints ``id`` or ``id;cluster``."""
    return stdout.strip().splitlines()[-1].split(";")[0]


def parse_scontrol(stdout: str) -> dict[str, str]:
    """``scontrol show job ID`` -> its Key=Value pairs (values never hold spaces except Command/Reason at line end)."""
    fields: dict[str, str] = {}
    for token in stdout.split():
        if "=" in token:
            key, _, value = token.partition("=")
            fields[key] = value
    return fields


class SlurmExecutor:
    name = "slurm"

    def submit(self, folder: Path) -> str:
        proc = _cli(["sbatch", "--parsable", str(folder / "job.sbatch")])
        if proc.returncode != 0:
            raise LoraforgeError(
                f"sbatch rejected the job: {proc.stderr.strip()}",
                "check --partition, --time and --gpus-per-node against `sinfo`",
            )
        return parse_parsable(proc.stdout)

    def status(self, job_id: str) -> JobState:
        proc = _cli(["scontrol", "show", "job", job_id])
        if proc.returncode != 0:
            if "Invalid job id" in proc.stderr:
                return JobState(job_id, "UNKNOWN", "gone from slurmctld's memory")
            raise LoraforgeError(f"scontrol failed for job {job_id}: {proc.stderr.strip()}", UP_HINT)
        fields = parse_scontrol(proc.stdout)
        return JobState(
            job_id, fields.get("JobState", "UNKNOWN"), fields.get("Reason", ""), int(fields.get("Restarts", "0"))
        )

    def cancel(self, job_id: str) -> None:
        proc = _cli(["scancel", job_id])
        if proc.returncode != 0:
            raise LoraforgeError(
                f"scancel failed for job {job_id}: {proc.stderr.strip()}", "check the id with `loraforge status`"
            )
