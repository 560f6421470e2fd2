"""Ray Jobs through ``ray.job_submission.JobSubmissionClient``: the Slurm agent, one Ray job per attempt.

Ray is an optional extra (``loraforge[ray]``) and is imported here only, only when a Ray job is submitted or looked
at: importing loraforge or ``--help`` never imports it.

The job's entrypoint is the same agent as on Slurm (``python -m orchestrator.agent FOLDER``) with
``entrypoint_num_gpus`` GPUs; it writes events.jsonl in the run folder, so ``status`` and ``logs`` read the same
events for both executors. The submission folder and the run folder must be on storage the Ray nodes share.

Retries (``submit --retries K``). Ray Jobs run once: there is no requeue. An attempt that FAILED after saving a
checkpoint is submitted again, same folder and entrypoint; the agent finds the run it made and resumes it at the
saved step, as after a Slurm requeue. The retry lives in the loraforge client, where loraforge asks Ray for the
job's state (``status``, ``logs -f``, ``submit --wait``), because every place on the cluster shares the failure it
would have to survive: the agent (so no in-process retry) and the entrypoint script both run on the GPU node that
dies, and ``ray job stop`` kills them both. A supervisor job on the head node would survive, but it is a second
long-lived process per job to schedule, cancel and debug: the home-made queue loraforge must not grow. The price:
a failed attempt is retried when someone looks, so follow unattended jobs with ``logs -f`` or ``submit --wait``.
Attempt N has the fixed submission id ``ID-rN`` and Ray refuses a duplicate id, so two watchers never start the
same attempt twice.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import LoraforgeError
from orchestrator.executors.base import JobState, lookup, run_folder

REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = "install Ray: pip install 'loraforge[ray]' (in a checkout: pip install -e '.[ray]')"
UP_HINT = (
    "start a head with `ray start --head --dashboard-host=0.0.0.0` and pass its dashboard address "
    "(--address http://HEAD:8265, or set RAY_ADDRESS)"
)
# Ray gives the entrypoint the raylet's environment, not the submitter's (sbatch exports it by default); these
# decide where the agent finds the backend environments (LORAFORGE_HOME) and models (HF_*).
FORWARDED_PREFIXES = ("LORAFORGE_", "HF_", "TRANSFORMERS_OFFLINE")
# Failures a retry would only repeat: same settings, same machine image, same outcome.
NOT_RETRIED = {"model_not_found", "not_installed", "bad_argument"}


@dataclass
class RayOptions:
    address: str
    gpus_per_node: int = 1
    retries: int = 0

    def save(self, folder: Path) -> None:
        (folder / "ray.json").write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, folder: Path) -> RayOptions:
        return cls(**json.loads((folder / "ray.json").read_text()))


def entrypoint(folder: Path, *, python: str = sys.executable, repo: Path = REPO) -> str:
    """The shell line Ray runs; ``exec`` so that the agent itself is the process Ray signals and watches."""
    return f"cd {shlex.quote(str(repo))} && exec {shlex.quote(python)} -m orchestrator.agent {shlex.quote(str(folder))}"


def forwarded_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in environ.items() if key.startswith(FORWARDED_PREFIXES)}


def attempt_id(job_id: str, attempt: int) -> str:
    return job_id if attempt == 0 else f"{job_id}-r{attempt}"


def why_not_retry(
    attempt: int, retries: int, *, cancelled: bool, resume_step: int | None, failure_kind: str | None
) -> str | None:
    """None when a FAILED attempt is to be submitted again; else why not, in words for `status`."""
    if cancelled:
        return "cancelled"
    if attempt >= retries:
        return f"all {retries} retries used" if retries else "submitted without --retries"
    if failure_kind in NOT_RETRIED:
        return f"not retried: the trainer failed with {failure_kind}, which a retry would repeat"
    if resume_step is None:
        return "not retried: no checkpoint was saved to resume from"
    return None


def connect(address: str) -> Any:  # ray.job_submission.JobSubmissionClient (typed Any: ray is optional)
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise LoraforgeError(
            f"--executor ray needs the ray package, which is not installed in {sys.executable}", INSTALL_HINT
        ) from exc
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise LoraforgeError(f"Ray is not reachable at {address}: {_first_line(exc)}", UP_HINT) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


class RayExecutor:
    name = "ray"

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}  # one version handshake per address, not one per status poll

    def client(self, address: str) -> Any:
        """A JobSubmissionClient for ``address``; a LoraforgeError with the fix when ray or the head is missing."""
        if address not in self._clients:
            self._clients[address] = connect(address)
        return self._clients[address]

    def submit(self, folder: Path) -> str:
        """Submit attempt 0 of the job in ``folder`` (job.yaml, backend, ray.json); its id is the job's id."""
        job_id = f"lf-{folder.name}"
        self._submit_attempt(folder, RayOptions.load(folder), job_id, 0)
        return job_id

    def _submit_attempt(self, folder: Path, opts: RayOptions, job_id: str, attempt: int) -> None:
        client = self.client(opts.address)
        try:
            client.submit_job(
                entrypoint=entrypoint(folder),
                submission_id=attempt_id(job_id, attempt),
                entrypoint_num_gpus=opts.gpus_per_node,
                runtime_env={"env_vars": forwarded_env(os.environ)},
                metadata={"loraforge_folder": str(folder), "loraforge_attempt": str(attempt)},
            )
        except RuntimeError as exc:
            if attempt > 0 and "already exists" in str(exc):
                return  # another watcher submitted this attempt first
            raise LoraforgeError(
                f"Ray rejected the job: {_first_line(exc)}", "check --gpus-per-node against `ray status`"
            ) from exc
        except OSError as exc:
            raise LoraforgeError(f"Ray is not reachable at {opts.address}: {_first_line(exc)}", UP_HINT) from exc

    def _latest(self, client: Any, job_id: str, retries: int) -> tuple[int, Any]:
        """The newest attempt's number and JobDetails (attempts are probed by their fixed ids)."""
        attempt, info = 0, self._info(client, job_id)
        if info is None:
            raise LoraforgeError(f"Ray does not know job {job_id}", "the head may have restarted; submit it again")
        for n in range(1, retries + 1):
            newer = self._info(client, attempt_id(job_id, n))
            if newer is None:
                break
            attempt, info = n, newer
        return attempt, info

    @staticmethod
    def _info(client: Any, submission_id: str) -> Any:
        try:
            return client.get_job_info(submission_id)
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                return None
            raise LoraforgeError(f"Ray could not report job {submission_id}: {_first_line(exc)}", UP_HINT) from exc
        except OSError as exc:
            raise LoraforgeError(f"Ray is not reachable: {_first_line(exc)}", UP_HINT) from exc

    def status(self, job_id: str) -> JobState:
        """The newest attempt's state (Ray's words: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED). A FAILED attempt
        with retries left and a saved checkpoint is resubmitted first (see the module docstring for why here)."""
        folder = Path(lookup(job_id)["folder"])
        opts = RayOptions.load(folder)
        client = self.client(opts.address)
        attempt, info = self._latest(client, job_id, opts.retries)
        note = ""
        if _status(info) == "FAILED":
            resume_step, failure_kind = _resume_facts(folder)
            why = why_not_retry(
                attempt,
                opts.retries,
                cancelled=(folder / "cancelled").exists(),
                resume_step=resume_step,
                failure_kind=failure_kind,
            )
            if why is None:
                self._submit_attempt(folder, opts, job_id, attempt + 1)
                attempt, info = self._latest(client, job_id, opts.retries)
            else:
                note = why
        return JobState(job_id, _status(info), _reason(info, opts, note), restarts=attempt)

    def cancel(self, job_id: str) -> None:
        """Stop the newest attempt (Ray sends SIGTERM, then SIGKILL after a few seconds) and never retry it."""
        folder = Path(lookup(job_id)["folder"])
        opts = RayOptions.load(folder)
        (folder / "cancelled").touch()  # first, so a watcher that sees the attempt die does not resubmit it
        client = self.client(opts.address)
        attempt, _ = self._latest(client, job_id, opts.retries)
        try:
            client.stop_job(attempt_id(job_id, attempt))
        except (RuntimeError, OSError) as exc:
            raise LoraforgeError(f"Ray could not stop job {job_id}: {_first_line(exc)}", UP_HINT) from exc


def _status(info: Any) -> str:
    return str(getattr(info.status, "value", info.status))


def _reason(info: Any, opts: RayOptions, note: str) -> str:
    state = _status(info)
    message = (info.message or "").strip()
    if state == "PENDING" and "waiting for resources" in message:
        return f"waiting for resources: {opts.gpus_per_node} GPU"
    if state == "FAILED":
        first = failure_summary(message)
        return f"{first}; {note}" if note else first
    return note


def failure_summary(message: str) -> str:
    """Ray's FAILED message is one line plus the log's tail: keep the line (without its log preamble) and the
    tail's last exception, e.g. ``...exit code 1: LoraforgeError: dataset folder /x has no images``."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "failed"
    head = lines[0].split(", last available logs")[0].rstrip(":")
    errors = [line for line in lines[1:] if re.match(r"^[\w.]+(Error|Exception|Interrupt): ", line)]
    if errors:
        name, _, text = errors[-1].partition(": ")
        head += f": {name.rsplit('.', 1)[-1]}: {text}"
    return head[:300]


def _resume_facts(folder: Path) -> tuple[int | None, str | None]:
    """The step a new attempt would resume at (None: nothing complete was saved) and the kind of the run's last
    event when it is a Failure (None when the attempt died without saying why: a node or process death)."""
    from orchestrator.events import Failure, read_events
    from orchestrator.resume import find_resume_point
    from orchestrator.runs import RunDir

    run = run_folder(folder)
    if run is None or not (run / "job.yaml").exists():
        return None, None
    try:
        _, _, point = find_resume_point(RunDir(run))
    except LoraforgeError:
        point = None
    events = read_events(run / "events.jsonl") if (run / "events.jsonl").exists() else []
    kind = events[-1].kind if events and isinstance(events[-1], Failure) else None
    return (point.step if point is not None else None), kind
