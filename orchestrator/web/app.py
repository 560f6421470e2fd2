"""The app: its settings, its parts (store, queue, runs index, live feeds, drafts), and starting and stopping them.

    app = App(Settings(runs=Path("runs")))
    server = app.bind()        # the socket is open; app.url is known (port 0: the OS picks one)
    app.start()                # the queue, the live feeds and the server, each on its own thread
    ...
    app.stop()                 # running trainers are left running: a server started later picks them up

Everything the app keeps of its own lives in RUNS/.loraforge-web/ (hidden, so it is never taken for a run): the
queue's store, the submission folders of its jobs, the drafts of new LoRAs and the secret that signs CSRF tokens.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.runs import RunDir
from orchestrator.userpath import user_path
from orchestrator.web.auth import Guard, is_loopback
from orchestrator.web.drafts import Drafts
from orchestrator.web.live import Feeds
from orchestrator.web.routes import build_routes
from orchestrator.web.runindex import RunIndex
from orchestrator.web.runner import AGENT, QueueRunner
from orchestrator.web.server import WebServer
from orchestrator.web.store import Store
from orchestrator.web.uploads import Limits

STATE_DIR = ".loraforge-web"


@dataclass
class Settings:
    runs: Path
    host: str = "127.0.0.1"
    port: int = 7860
    token: str | None = None  # None on loopback: no token; elsewhere the caller must give or generate one
    gpus: Sequence[str] | None = None  # None: the GPUs this machine shows (CUDA_VISIBLE_DEVICES, nvidia-smi)
    limits: Limits = field(default_factory=Limits)
    worker: Sequence[str] = AGENT  # the command a local job runs, given the submission folder


class App:
    def __init__(self, settings: Settings) -> None:
        if settings.token is None and not is_loopback(settings.host):
            raise ValueError("a server on a non-loopback address needs a token")
        self.settings = settings
        self.runs_root = user_path(settings.runs).resolve()
        self.runs_root.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.runs_root / STATE_DIR
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        self.limits = settings.limits
        self.store = Store(self.state_dir / "queue.sqlite")
        self.index = RunIndex(self.runs_root)
        self.feeds = Feeds()
        self.drafts = Drafts(self.state_dir / "drafts", self.runs_root)
        gpus = settings.gpus if settings.gpus is not None else _visible_gpus()
        self.runner = QueueRunner(self.store, self.state_dir / "jobs", gpus=gpus, worker=settings.worker)
        self.routes = build_routes(self)
        self.secret = _secret(self.state_dir / "secret")
        self.guard = Guard(settings.token, self.secret, settings.port, is_loopback(settings.host))
        self.server: WebServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.settings.host
        shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "") else host)
        port = self.server.server_port if self.server else self.settings.port
        return f"http://{shown}:{port}/"

    def bind(self) -> WebServer:
        self.server = WebServer((self.settings.host, self.settings.port), self)
        self.guard = Guard(self.settings.token, self.secret, self.server.server_port, self.guard.loopback)
        return self.server

    def start(self) -> None:
        server = self.server or self.bind()
        self._start_parts()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve in the calling thread until Ctrl-C (the CLI); then call :meth:`stop`."""
        server = self.server or self.bind()
        self._start_parts()
        server.serve_forever(poll_interval=0.2)

    def _start_parts(self) -> None:
        self.feeds.start()
        self.runner.start()
        # read every run folder once now, so the first look at the runs page is as quick as the next
        threading.Thread(target=self.index.rows, name="runs-index", daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stopping.set()
        self.feeds.stop()
        self.runner.stop()
        if self.server is not None:
            if self._thread is not None:
                self.server.shutdown()
                self._thread.join(timeout=5)
            self.server.server_close()
        self.store.close()

    # --- answers shared by pages and the API -------------------------------------------------------------------
    def runs_json(self) -> dict[str, Any]:
        rows = [row.to_json() for row in self.index.rows()]
        jobs = {job.run: job for job in self.store.jobs() if job.run}
        for row in rows:  # the queue knows what a run folder cannot say: a worker that died, a cancel
            job = jobs.get(str(self.runs_root / row["name"]))
            row["job"] = job.id if job else None
            if job and job.status in ("failed", "cancelled") and row["status"] in ("running", "created"):
                row["status"] = job.status
        waiting = [job.to_json() for job in self.store.jobs("queued", "running") if not job.run]
        return {"runs": rows, "waiting": waiting}

    def run_json(self, run: RunDir) -> dict[str, Any]:
        from orchestrator.web.rundetail import run_detail

        detail = run_detail(run, self.store.by_run(run.path))
        row = self.index.row(run.path.name)
        detail["summary"] = row.to_json() if row else None
        detail["loras"] = [row.lora] if row and row.lora else []  # the final LoRA, as the Finished event names it
        detail["root"] = str(run.path)
        return detail

    def session_json(self) -> dict[str, Any]:
        from backends.base import names
        from orchestrator.captions import CAPTIONERS
        from orchestrator.presets import builtin_names

        return {
            "csrf": self.guard.csrf_token,
            "backends": names(),
            "presets": builtin_names(),
            "captioners": list(CAPTIONERS),
            "gpus": self.runner.gpus,
            "limits": vars(self.limits),
            "runs": str(self.runs_root),
        }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _secret(path: Path) -> bytes:
    """The key that signs CSRF tokens, kept so that pages left open stay valid across a restart."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        value = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value.hex())
        return value


def _visible_gpus() -> list[str]:
    from orchestrator.compare.monitor import visible_gpus

    return visible_gpus()


def serve(
    runs: Path, *, host: str = "127.0.0.1", port: int = 7860, token: str | None = None, gpus: list[str] | None = None
) -> int:
    """`loraforge serve`: bind, print the URL (with the token), serve until Ctrl-C. Trainers keep running after."""
    from orchestrator.display import console
    from orchestrator.errors import LoraforgeError
    from orchestrator.web.auth import new_token

    con = console()
    generated = token is None and not is_loopback(host)
    if generated:
        token = new_token()
    app = App(Settings(runs=runs, host=host, port=port, token=token, gpus=gpus))
    try:
        app.bind()
    except OSError as exc:
        app.store.close()
        raise LoraforgeError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", "pick another --port (or --port 0: any free one)"
        ) from None
    app.index.rows()  # every run folder read once before the first page is asked for
    url = app.url + (f"?token={token}" if token else "")
    con.print(f"loraforge serve: {url}", soft_wrap=True, highlight=False)
    con.print(f"runs: {app.runs_root}; jobs run on {', '.join(app.runner.gpus) or 'the CPU, one at a time'}")
    if generated:
        con.print("a token was generated (every request needs it): open the URL above, or pass --token")
    elif not token:
        con.print("listening on loopback only, no token (use --host and a token to reach it from elsewhere)")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` / systemd stop: the same orderly stop as Ctrl-C
    try:
        app.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        running = [job.name for job in app.store.jobs("running")]
        app.stop()
    if running:
        con.print(
            f"stopped; {len(running)} job(s) still training ({', '.join(running)}): `loraforge serve` picks them up"
        )
    return 0
