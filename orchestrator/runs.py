"""Run folders: ``runs/<name>-<timestamp>/`` with the resolved job, rendered files, raw logs, events and output.

Layout::

    job.yaml          the resolved JobSpec (what actually ran)
    run.json          backend, status, last step, times (updated as the run goes)
    rendered/         the backend's own config files
    logs/             raw stdout.log / stderr.log bytes, exactly as the child wrote them
    events.jsonl      the unified event stream
    output/           the final LoRA (<name>.safetensors) and the backend's checkpoints
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.errors import LoraforgeError
from orchestrator.events import Checkpoint, Failure, Finished, Progress, Validation, read_events
from orchestrator.job import JobSpec, build_job, dump_job, read_yaml


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def job_file(self) -> Path:
        return self.path / "job.yaml"

    @property
    def state_file(self) -> Path:
        return self.path / "run.json"

    @property
    def rendered(self) -> Path:
        return self.path / "rendered"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def events_file(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def output(self) -> Path:
        return self.path / "output"

    @property
    def data(self) -> Path:
        """The run's own copy of the dataset (links to the images, captions as trained): what the trainer reads."""
        return self.path / "data"

    def load_job(self) -> JobSpec:
        if not self.job_file.exists():
            raise LoraforgeError(
                f"{self.path} is not a loraforge run folder (no job.yaml)", "pass a folder under runs/"
            )
        return build_job(read_yaml(self.job_file, "run job file"), str(self.job_file))

    def state(self) -> dict[str, Any]:
        if not self.state_file.exists():
            return {}
        try:
            return json.loads(self.state_file.read_text(encoding="utf-8"))
        except ValueError:
            return {}

    def update_state(self, **values: Any) -> None:
        data = self.state()
        data.update(values)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
        tmp.replace(self.state_file)


def create_run(job: JobSpec, backend: str, *, root: Path | None = None) -> RunDir:
    """A fresh run folder for ``job``; its name is unique even for runs started in the same second."""
    base = Path(root) if root else job.output.dir
    base.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    n = 1
    while True:  # mkdir is the claim: two runs started in the same second never share a folder
        path = base / (f"{job.name}-{stamp}" if n == 1 else f"{job.name}-{stamp}-{n}")
        try:
            path.mkdir(mode=0o700)  # rendered files hold paths and ids: the owner's only
            break
        except FileExistsError:
            n += 1
    run = RunDir(path)
    for sub in (run.rendered, run.logs, run.output):
        sub.mkdir()
    run.job_file.write_text(dump_job(job), encoding="utf-8")
    run.update_state(backend=backend, status="created", created=time.time())
    return run


@dataclass(frozen=True)
class RunSummary:
    path: Path
    name: str
    backend: str
    status: str
    step: int | None
    total: int | None
    loss: float | None
    lora: str | None
    failure: str | None


def summarize(run: RunDir) -> RunSummary:
    state = run.state()
    last: Progress | None = None
    lora = None
    failure = None
    for event in read_events(run.events_file):
        if isinstance(event, Progress):
            last = event
        elif isinstance(event, Finished):
            lora = event.lora_path
        elif isinstance(event, Failure):
            failure = f"{event.kind}: {event.message}"
    return RunSummary(
        path=run.path,
        name=run.path.name,
        backend=str(state.get("backend", "?")),
        status=str(state.get("status", "?")),
        step=last.step if last else None,
        total=last.total if last else None,
        loss=last.loss if last else None,
        lora=lora,
        failure=failure,
    )


def checkpoint_table(run: RunDir) -> list[dict[str, Any]]:
    """Checkpoints with the mean training loss since the previous checkpoint (one step's loss is too noisy to tell a
    trend) and the validation loss measured at their step (if any)."""
    events = read_events(run.events_file)
    losses = {e.step: e.loss for e in events if isinstance(e, Progress) and e.loss is not None}  # a step's last
    validations = {e.step: e.loss for e in events if isinstance(e, Validation)}
    rows = []
    previous = 0
    for event in events:
        if isinstance(event, Checkpoint) and event.step is not None:
            train = [loss for step, loss in losses.items() if previous < step <= event.step]
            rows.append(
                {
                    "step": event.step,
                    "path": event.path,
                    "train_loss": sum(train) / len(train) if train else None,
                    "val_loss": validations.get(event.step),
                }
            )
            previous = event.step
    return rows


def list_runs(root: Path) -> list[RunDir]:
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if (p / "job.yaml").exists()]
    return sorted(runs, key=lambda r: r.path.stat().st_mtime)
