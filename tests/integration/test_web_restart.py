"""Kill `loraforge serve` (SIGKILL) while a real SimpleTuner job trains and another waits, start it again: the
trainer never noticed, the running job still shows with its progress (a page left open goes on without a reload),
and the queue goes on: the waiting job starts when the first ends. Both LoRAs are written."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from web_helpers import CHROMIUM_ARGS, ServeProcess, artifact, chromium, free_port, keep_artifact, wait_for

from orchestrator.web.runner import process_alive

pytestmark = pytest.mark.integration

SETUP = "`loraforge setup simpletuner` (or `loraforge setup simpletuner --venv EXISTING_VENV`)"
LONG = 80  # steps of the job that trains through the restart: long enough to outlast it (about 5 steps/s here)
TINY = (
    "training.resolution=128\ntraining.precision=fp32\ntraining.gradient_checkpointing=false\ntraining.warmup_steps=0"
)


@pytest.fixture
def st_env(real_registry: Path):  # type: ignore[no-untyped-def]
    from backends.simpletuner import SimpleTunerBackend
    from orchestrator.envs import load_registry

    env = load_registry().get("simpletuner")
    if env is None or not env.python.exists():
        pytest.skip(f"SimpleTuner is not set up on this machine: run {SETUP}")
    problems = SimpleTunerBackend().check(env)
    if problems:
        pytest.skip(f"SimpleTuner environment not usable ({problems[0].message}): run {SETUP}")
    return env


class Client:
    """The app's JSON API as its pages call it (the CSRF token from /api/session)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.csrf = self.call("GET", "/api/session")["csrf"]

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if method != "GET":
            request.add_header("X-CSRF-Token", self.csrf)
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.loads(response.read() or b"null")

    def runs(self) -> dict[str, dict[str, Any]]:
        return {row["name"]: row for row in self.call("GET", "/api/runs")["runs"]}


def test_a_killed_server_comes_back_to_its_running_job_and_queue(st_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.tiny import tiny_sdxl
    from orchestrator.tiny.dataset import make_dataset

    model = tiny_sdxl(st_env.python, root=tmp_path / "tiny")
    photos = make_dataset(tmp_path / "photos", count=5, size=256)  # drawn shapes, each with a caption
    runs = tmp_path / "runs"
    server = ServeProcess(runs, free_port(), "--gpus", "none")
    url = server.start()
    try:
        client = Client(url)
        draft = client.call("POST", "/api/drafts")["id"]
        for path in sorted(photos.iterdir()):
            client.call("PUT", f"/api/drafts/{draft}/files/{path.name}", raw=path.read_bytes())
        report = client.call("POST", f"/api/drafts/{draft}/prep", {"subject": "object", "size": 256, "crop": "center"})
        assert report["accepted"] >= 3, report  # drawn shapes: one may be a near-duplicate of another
        form = {"subject": "object", "base_model": str(model), "backend": "simpletuner", "rank": 4}
        first = client.call("POST", f"/api/drafts/{draft}/start", {**form, "name": "first", "steps": LONG,
                                                                   "set": TINY + "\nsaving.every_n_steps=20"})  # fmt: skip
        second = client.call("POST", f"/api/drafts/{draft}/start", {**form, "name": "second", "steps": 4, "set": TINY})
        job = wait_for(lambda: client.call("GET", f"/api/jobs/{first['id']}").get("run_name") and
                       client.call("GET", f"/api/jobs/{first['id']}"), timeout=120, what="the first run")  # fmt: skip
        name = job["run_name"]
        wait_for(lambda: (client.runs()[name]["step"] or 0) >= 2, timeout=300, interval=0.5, what="step 2")
        page = None
        if chromium() is not None:
            sync_api = pytest.importorskip("playwright.sync_api")
            playwright = sync_api.sync_playwright().start()
            chrome = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            page = chrome.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}runs/{name}")
            sync_api.expect(page.locator("#step")).not_to_have_text("–")
            page.evaluate("window.__sameDocument = true")

        before = client.runs()[name]["step"]
        assert client.call("GET", f"/api/jobs/{second['id']}")["status"] == "queued"
        server.kill()
        assert process_alive(job["pid"], job["pid_start"]), "the trainer's worker died with the server"
        events = runs / name / "events.jsonl"
        size = events.stat().st_size
        wait_for(lambda: events.stat().st_size > size, timeout=120, what="training to go on with no server")

        server.start()
        client = Client(url)
        row = client.runs()[name]
        assert row["status"] == "running" and row["step"] >= before, row
        assert client.call("GET", f"/api/jobs/{first['id']}")["status"] == "running"
        assert client.call("GET", f"/api/jobs/{second['id']}")["status"] == "queued"
        if page is not None:  # the page left open reconnects by itself and keeps counting
            sync_api.expect(page.locator("#step")).to_have_text(f"{LONG}/{LONG}", timeout=300_000)
            sync_api.expect(page.locator("#status")).to_have_text("finished", timeout=30_000)
            assert page.evaluate("window.__sameDocument") is True
            shot = artifact(tmp_path, "web-run-after-restart.png")
            page.screenshot(path=str(shot), full_page=True)
            keep_artifact(shot)
            chrome.close()
            playwright.stop()

        done = wait_for(lambda: client.call("GET", f"/api/jobs/{second['id']}")["status"] not in ("queued", "running")
                        and client.call("GET", f"/api/jobs/{second['id']}"), timeout=400, interval=1, what="the second")  # fmt: skip
        a = client.call("GET", f"/api/jobs/{first['id']}")
        assert (a["status"], done["status"]) == ("finished", "finished"), (a, done, server.output[-20:])
        assert done["started"] >= a["ended"]
        for finished in (a, done):
            lora = runs / finished["run_name"] / "output" / f"{finished['name']}.safetensors"
            assert lora.stat().st_size > 0
        steps = client.runs()[name]
        assert (steps["step"], steps["total"], steps["status"]) == (LONG, LONG, "finished")
    finally:
        server.stop()
        leftovers = workers(runs)
        for pid in leftovers:  # a failed test must not leave a trainer running: stop each as Ctrl-C would
            os.kill(pid, signal.SIGTERM)
    assert not leftovers, "a worker outlived its job"


def test_cancel_a_real_run_then_resume_it_from_its_checkpoint(st_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.events import Progress, read_events
    from orchestrator.tiny import tiny_sdxl
    from orchestrator.tiny.dataset import make_dataset

    model = tiny_sdxl(st_env.python, root=tmp_path / "tiny")
    photos = make_dataset(tmp_path / "photos", count=5, size=256)
    runs = tmp_path / "runs"
    server = ServeProcess(runs, free_port(), "--gpus", "none")
    url = server.start()
    try:
        client = Client(url)
        draft = client.call("POST", "/api/drafts")["id"]
        for path in sorted(photos.iterdir()):
            client.call("PUT", f"/api/drafts/{draft}/files/{path.name}", raw=path.read_bytes())
        client.call("POST", f"/api/drafts/{draft}/prep", {"subject": "object", "size": 256, "crop": "center"})
        form = {"name": "stopme", "subject": "object", "base_model": str(model), "backend": "simpletuner", "rank": 4,
                "steps": 40, "set": TINY + "\nsaving.every_n_steps=5\nsaving.keep_last=2"}  # fmt: skip
        job = client.call("POST", f"/api/drafts/{draft}/start", form)
        name = wait_for(lambda: client.call("GET", f"/api/jobs/{job['id']}").get("run_name"), timeout=120, what="run")
        wait_for(lambda: client.call("GET", f"/api/runs/{name}")["checkpoints"], timeout=300, interval=0.3,
                 what="the first checkpoint")  # fmt: skip
        client.call("POST", f"/api/runs/{name}/cancel")
        stopped = wait_for(lambda: client.call("GET", f"/api/jobs/{job['id']}")["status"] != "running" and
                           client.call("GET", f"/api/jobs/{job['id']}"), timeout=120, what="the cancel")  # fmt: skip
        assert stopped["status"] == "cancelled"
        row = client.runs()[name]
        assert row["status"] == "interrupted" and row["step"] < 40, row
        saved = max(c["step"] for c in client.call("GET", f"/api/runs/{name}")["checkpoints"])

        resumed = client.call("POST", f"/api/runs/{name}/resume")
        assert resumed["run"] == str(runs / name)
        done = wait_for(lambda: client.call("GET", f"/api/jobs/{resumed['id']}")["status"] not in ("queued", "running")
                        and client.call("GET", f"/api/jobs/{resumed['id']}"), timeout=400, interval=1, what="resume")  # fmt: skip
        assert done["status"] == "finished", (done, server.output[-20:])
        state = json.loads((runs / name / "run.json").read_text())
        assert state["status"] == "finished" and state["resumed_from"] == saved
        steps = [e.step for e in read_events(runs / name / "events.jsonl") if isinstance(e, Progress)]
        restarts = [i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]]  # where the resumed part begins
        assert steps[-1] == 40 and len(restarts) <= 1
        assert not restarts or steps[restarts[0]] == saved + 1  # went on from the checkpoint, not from step 1
        assert (runs / name / "output" / "stopme.safetensors").stat().st_size > 0
    finally:
        server.stop()
        leftovers = workers(runs)
        for pid in leftovers:
            os.kill(pid, signal.SIGTERM)
    assert not leftovers, "a worker outlived its job"


def workers(runs: Path) -> list[int]:
    """Agents still running for this test's queue (their command line names its jobs folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if proc.name.isdigit() and "orchestrator.agent" in cmdline and str(runs / ".loraforge-web") in cmdline:
            found.append(int(proc.name))
    return found
