"""Runs inside a cluster job: the normal loraforge launch for the submission folder's job.yaml.

``python -m orchestrator.agent FOLDER``. The run folder (logs, events.jsonl, checkpoints) goes under the job's
output dir; its path is written to FOLDER/run so `loraforge status/logs` find the same events as a local run.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from orchestrator.job import build_job, load_yaml_layer
    from orchestrator.runs import create_run
    from orchestrator.training import run_training

    folder = Path(argv[0])
    job = build_job(load_yaml_layer(folder / "job.yaml"), str(folder / "job.yaml"))
    backend = (folder / "backend").read_text().strip()
    run = create_run(job, backend)
    (folder / "run").write_text(str(run.path))
    outcome = run_training(job, backend, run=run)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
