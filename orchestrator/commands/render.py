"""`loraforge render JOB.yaml --backend kohya -o DIR`: write the backend's files, print its command, launch nothing."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from orchestrator.commands.common import add_job_arguments, job_layers, resolve_job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)
    parser.add_argument(
        "-o",
        "--out",
        default="rendered",
        help="folder for the run's files: DIR/rendered holds the backend's config (default: ./rendered)",
    )
    parser.add_argument("--explain", action="store_true", help="show each resolved value and where it came from")


def run(args: argparse.Namespace) -> int:
    from backends import base
    from orchestrator.envs import BackendEnv, load_registry
    from orchestrator.training import preflight

    job = resolve_job(args)
    if args.explain:
        from orchestrator.explain import explain

        layers, _ = job_layers(args)
        sys.stdout.write(explain(job, layers))
    backend = base.get(args.backend or "kohya")
    if job.family is None:
        from orchestrator.basemodel import infer_family

        family = infer_family(job.base_model)
        if family:
            job = job.model_copy(update={"family": family})
    if job.family is None:
        job, _ = preflight(job, backend)
    # laid out like a run folder: backends put per-run data, caches and outputs beside rendered/, all inside DIR
    out = Path(args.out).resolve()
    rendered = backend.render(job, out / "rendered")
    env = load_registry().get(backend.name) or BackendEnv(backend.name, Path("python"))
    launch = backend.command(job, rendered, env)
    for label, path in rendered.files.items():
        print(f"{label}: {path}")
    for note in rendered.notes:
        print(f"note: {note}")
    print(f"cd {shlex.quote(str(launch.cwd))} && {shlex.join(launch.argv)}")
    return 0
