"""Helpers for the web app's tests: a real server on a free loopback port, plain HTTP calls, an SSE reader, a fake
worker that keeps the agent's contract (for the queue's unit tests), and headless Chromium."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.web.app import App, Settings

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@contextmanager
def running_app(runs: Path, **settings: Any) -> Iterator[App]:
    """An App serving ``runs`` on 127.0.0.1 at a free port, stopped (workers left alone) on exit."""
    app = App(Settings(runs=runs, port=0, **settings))
    app.start()
    try:
        yield app
    finally:
        app.stop()


def call(
    app: App,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    *,
    csrf: bool = True,
    timeout: float = 60,
    stream: bool = False,
) -> Reply:
    """One request over a fresh connection; JSON for a dict body; the page's CSRF header unless ``csrf`` is False.
    ``stream``: an endless answer (server-sent events): only its status and headers are read."""
    assert app.server is not None
    connection = http.client.HTTPConnection("127.0.0.1", app.server.server_port, timeout=timeout)
    sent = dict(headers or {})
    if csrf and method in ("POST", "PUT", "DELETE"):
        sent.setdefault("X-CSRF-Token", app.guard.csrf_token)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    if data is not None and isinstance(body, dict):
        sent.setdefault("Content-Type", "application/json")
    connection.request(method, path, body=data, headers=sent)
    response = connection.getresponse()
    body = b"" if stream and response.status == 200 else response.read()
    reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    connection.close()
    return reply


def read_sse(
    app: App,
    path: str,
    *,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 30,
    headers: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Messages of an event stream (decoded ``data``) and their ids, until ``until(messages)`` or the timeout."""
    assert app.server is not None
    connection = http.client.HTTPConnection("127.0.0.1", app.server.server_port, timeout=timeout)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    assert response.status == 200, response.read()
    messages: list[dict[str, Any]] = []
    ids: list[str] = []
    deadline = time.monotonic() + timeout
    current_id = None
    try:
        while time.monotonic() < deadline and not until(messages):
            line = response.fp.readline().decode()
            if not line:
                break
            if line.startswith("id: "):
                current_id = line[4:].strip()
            elif line.startswith("data: "):
                messages.append(json.loads(line[6:]))
                ids.append(current_id or "")
    finally:
        connection.close()
    return messages, ids


# A stand-in for `python -m orchestrator.agent FOLDER` with the same contract (job.yaml and backend in the folder;
# the run folder made under the job's output dir and named in FOLDER/run; run.json and events.jsonl written as a
# run does; on a second start with FOLDER/run present it continues that run), training nothing: each step is a
# sleep. SIGTERM stops it as Ctrl-C stops a run. Behaviour is read from the job's backend_args.fake.
FAKE_WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from orchestrator.events import EventLog, Failure, Finished, Phase, Progress
    from orchestrator.job import build_job, load_yaml_layer
    from orchestrator.runs import RunDir, create_run

    folder = Path(sys.argv[1])
    job = build_job(load_yaml_layer(folder / "job.yaml"))
    fake = job.backend_args.get("fake", {})
    marker = folder / "run"
    if marker.exists():
        run = RunDir(Path(marker.read_text().strip()))
        first = max((int(line.split('"step": ')[1].split(",")[0]) for line in run.events_file.read_text().splitlines()
                     if '"progress"' in line), default=0) + 1
    else:
        run = create_run(job, (folder / "backend").read_text().strip())
        marker.write_text(str(run.path))
        first = 1
    run.update_state(status="running", gpus=os.environ.get("CUDA_VISIBLE_DEVICES"), pid=os.getpid())
    log = EventLog(run.events_file)
    stopped = []
    signal.signal(signal.SIGTERM, lambda *a: stopped.append(1))
    log.write(Phase("training"))
    total = job.training.steps
    for step in range(first, total + 1):
        if stopped:
            log.write(Failure("interrupted", "stopped by the user"))
            run.update_state(status="interrupted", step=step - 1)
            sys.exit(1)
        time.sleep(float(fake.get("step_s", 0.05)))
        log.write(Progress(step, total, loss=1.0 / step, it_per_s=20.0, eta_s=0.05 * (total - step)))
        if fake.get("die_at") == step:
            os.kill(os.getpid(), signal.SIGKILL)
    lora = run.output / f"{job.lora_name}.safetensors"
    lora.write_bytes(b"not really a LoRA")
    log.write(Finished(str(lora), 1.0))
    run.update_state(status="finished", step=total)
    """
)


def fake_worker(tmp: Path) -> list[str]:
    """The command line of the fake worker (give it as Settings.worker or QueueRunner's worker)."""
    script = tmp / "fake_worker.py"
    script.write_text(FAKE_WORKER, encoding="utf-8")
    return [sys.executable, str(script)]


def job_yaml(tmp: Path, runs: Path, name: str = "q", steps: int = 20, **fake: Any) -> str:
    from orchestrator.job import build_job, dump_job

    dataset = tmp / "dataset"
    dataset.mkdir(exist_ok=True)
    job = build_job(
        {
            "name": name,
            "base_model": "stabilityai/stable-diffusion-xl-base-1.0",
            "family": "sdxl",
            "dataset": str(dataset),
            "training": {"steps": steps},
            "output": {"dir": str(runs)},
            "backend_args": {"fake": fake},
        }
    )
    return dump_job(job)


def wait_for(check: Callable[[], Any], timeout: float = 30, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def chromium() -> str | None:
    for path in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or ""):
        if path and os.access(path, os.X_OK):
            return path
    return None


def artifact(tmp: Path, name: str) -> Path:
    """Where a screenshot goes: the test's temp folder, and also $LORAFORGE_TEST_ARTIFACTS when set."""
    path = tmp / "artifacts" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def keep_artifact(path: Path) -> None:
    print(f"artefact: {path}")
    extra = os.environ.get("LORAFORGE_TEST_ARTIFACTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(extra) / path.name)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """`loraforge serve` as users run it: its own process (so it can be killed), on a fixed port (so a page left
    open reconnects to the next one)."""

    def __init__(self, runs: Path, port: int, *extra: str) -> None:
        self.runs, self.port, self.extra = runs, port, extra
        self.process: Any = None
        self.output: list[str] = []

    def start(self, timeout: float = 60) -> str:
        import subprocess
        import threading

        self.output = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "serve", "--runs", str(self.runs), "--port", str(self.port),
             *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
        first: list[str] = []
        ready = threading.Event()

        def drain() -> None:
            for line in self.process.stdout:
                self.output.append(line)
                if line.startswith("loraforge serve: ") and not first:
                    first.append(line.split(": ", 1)[1].strip())
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(timeout) or not first:
            self.stop()
            raise AssertionError("loraforge serve did not start:\n" + "".join(self.output))
        return first[0]

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when the machine's OOM killer or a `kill -9` takes it."""
        import signal

        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except Exception:
                self.process.kill()
