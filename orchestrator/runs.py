"""Run folders: ``runs/<name>-<timestamp>/`` with the resolved job, rendered files, raw logs, events and output.

Layout::

    job.yaml          the resolved JobSpec (what actually ran)
    run.json          backend, status, last step, times, the launcher's identity (updated as the run goes)
    rendered/         the backend's own config files
    logs/             raw stdout.log / stderr.log bytes, exactly as the child wrote them
    events.jsonl      the unified event stream
    output/           the final LoRA (<name>.safetensors) and the backend's checkpoints
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
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
        """run.json as a dict; {} when it is missing, unreadable or not a JSON object (a reader never crashes)."""
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        return data if isinstance(data, dict) else {}

    def update_state(self, **values: Any) -> None:
        """Merge ``values`` into run.json atomically (a temp file renamed over it). On a full disk, where not even
        the small temp file fits, run.json is rewritten in the blocks it already has, so a run that fails for lack
        of space still records how it ended; an error only when that cannot be done either."""
        data = self.state()
        data.update(values)
        text = json.dumps(data, indent=2, default=str)
        tmp = self.state_file.with_suffix(".tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(self.state_file)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if not self._rewrite_in_place(text.encode()):
                raise exc from None

    def _rewrite_in_place(self, data: bytes) -> bool:
        """Overwrite run.json without allocating: only when the new text fits the blocks the file already holds."""
        try:
            allocated = self.state_file.stat().st_blocks * 512
            if len(data) > allocated:
                return False
            with self.state_file.open("r+b") as f:
                f.write(data)
                f.truncate()
        except OSError:
            return False
        return True


def launcher_identity() -> dict[str, Any]:
    """Who is running a run: this process (pid, its start time and the boot it belongs to, so a reused pid is not
    taken for it) on this host. Recorded in run.json when the trainer starts; see :func:`launcher_gone`."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _process_start(os.getpid()),
        "boot": _boot_id(),
    }


def launcher_gone(launcher: object) -> bool:
    """True when the recorded launcher is certainly gone: it ran on this host, in this boot, and no process with
    its pid and start time exists. A launcher on another host (a cluster node) is never declared gone from here."""
    if not isinstance(launcher, dict) or launcher.get("host") != socket.gethostname():
        return False
    pid = launcher.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if launcher.get("boot") is not None and launcher.get("boot") != _boot_id():
        return True  # the machine rebooted since
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # a process of another user has the pid: compare start times below
    started = launcher.get("started")
    return started is not None and _process_start(pid) not in (None, started)


def _process_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux); None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields_after_name = stat.rpartition(")")[2].split()
    return fields_after_name[19] if len(fields_after_name) > 19 else None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


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
    run.update_state(backend=backend, status="created", created=time.time(), launcher=launcher_identity())
    return run


def disk_failure(error: OSError, run: RunDir) -> Failure:
    """The run's end when its folder's disk failed under it (full, read-only, I/O errors): the trainer was stopped
    because its log could not be written; what it saved before stays."""
    from orchestrator.errors import describe_os_error

    what = describe_os_error(error).splitlines()[0]
    return Failure(
        "disk_full",
        f"{what}; the run stopped there (what it saved before is kept in {run.path})",
        f"free some space there (or set output.dir to another disk), then continue with `loraforge resume {run.path}`",
        [],
        str(run.logs),
    )


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
    warnings: list[str] = field(default_factory=list)  # lines of events.jsonl that were skipped, and why


# A run in these states has a launcher that should still be alive.
LIVE_STATUSES = ("created", "running")


def summarize(run: RunDir) -> RunSummary:
    state = run.state()
    warnings: list[str] = []
    last: Progress | None = None
    lora = None
    failure = None
    for event in read_events(run.events_file, warnings):
        if isinstance(event, Progress):
            last = event
        elif isinstance(event, Finished):
            lora = event.lora_path
        elif isinstance(event, Failure):
            failure = f"{event.kind}: {event.message}"
    status = str(state.get("status", "?"))
    if status in LIVE_STATUSES and launcher_gone(state.get("launcher")):
        pid = state["launcher"]["pid"]
        status = "killed"
        failure = failure or (
            f"the loraforge process that ran it (pid {pid}) is gone, without recording an end: "
            f"continue with `loraforge resume {run.path}`"
        )
    return RunSummary(
        path=run.path,
        name=run.path.name,
        backend=str(state.get("backend", "?")),
        status=status,
        step=last.step if last else None,
        total=last.total if last else None,
        loss=last.loss if last else None,
        lora=lora,
        failure=failure,
        warnings=warnings,
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
    """The run folders under ``root``, oldest first; a folder that vanishes or cannot be read is left out."""
    if not root.is_dir():
        return []
    found: list[tuple[float, RunDir]] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    for path in entries:
        with contextlib.suppress(OSError):
            if path.is_dir() and (path / "job.yaml").is_file():
                found.append((path.stat().st_mtime, RunDir(path)))
    return [run for _, run in sorted(found, key=lambda item: (item[0], item[1].path.name))]
