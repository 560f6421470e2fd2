"""The disk fills up in the middle of a real training run (the run folder on a small tmpfs, filled to the last byte
once the first checkpoint is saved): `loraforge train` exits within 30 s with a disk-full failure naming the run
folder, the trainer is gone, the log and the checkpoint saved before stay.

Needs root to mount a tmpfs (CI runs as root) and the backend set up; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import usable_env

pytestmark = pytest.mark.integration

SECONDS_ALLOWED = 30


@contextmanager
def small_tmpfs(size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root): run as root to fill a disk mid-training")
    folder = Path(tempfile.mkdtemp(prefix="loraforge-disk-full-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        folder.rmdir()


def fill(folder: Path) -> None:
    """Fill the file system under ``folder`` to the last byte."""
    with (folder / "filler").open("wb", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                continue


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (the trainer's argv names its run folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def job_for(backend: str, registry: dict, tmp_path: Path, runs: Path) -> Path:
    from orchestrator.tiny.dataset import make_dataset

    env = usable_env(registry, backend)
    if backend == "simpletuner":
        from orchestrator.tiny import tiny_sdxl

        model, resolution = tiny_sdxl(env.python), 128
    else:
        from orchestrator.tiny import tiny_sd15

        model, resolution = tiny_sd15(env.python), 64
    data = make_dataset(tmp_path / "data", count=4, size=resolution)
    job = {
        "name": f"full-{backend}",
        "base_model": str(model),
        "dataset": str(data),
        "trigger": "ohwx",
        "add_trigger": True,
        "network": {"rank": 4},
        "training": {"steps": 40, "resolution": resolution, "precision": "fp32", "gradient_checkpointing": False},
        "saving": {"every_n_steps": 2},
        "output": {"dir": str(runs)},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.mark.parametrize("backend", ["simpletuner", "kohya"])
def test_the_disk_fills_mid_training(backend: str, backend_home: dict, tmp_path: Path) -> None:
    with small_tmpfs("512m") as disk:
        job = job_for(backend, backend_home, tmp_path, disk / "runs")
        argv = [sys.executable, "-m", "orchestrator.cli", "train", str(job), "--backend", backend, "--json"]
        stderr = (tmp_path / "stderr.txt").open("w")
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)
        watchdog = threading.Timer(900, child.kill)  # a hang fails the test instead of blocking the suite
        watchdog.start()
        events: list[dict] = []
        filled_at: float | None = None
        try:
            assert child.stdout is not None
            for line in child.stdout:
                if not line.startswith("{"):
                    continue
                events.append(json.loads(line))
                if filled_at is None and events[-1]["event"] == "checkpoint":
                    fill(disk)  # the first checkpoint is on disk: from now on nothing more fits
                    filled_at = time.monotonic()
            child.wait()
            exited_at = time.monotonic()
        finally:
            watchdog.cancel()
            stderr.close()
        messages = (tmp_path / "stderr.txt").read_text()
        assert filled_at is not None, f"no checkpoint was saved before the run ended:\n{messages[-3000:]}"
        seconds = exited_at - filled_at
        failures = [e for e in events if e["event"] == "failure"]
        print(f"{backend}: loraforge exited {seconds:.1f} s after the disk filled: {failures[-1:]}")
        assert seconds < SECONDS_ALLOWED, f"{seconds:.0f} s from a full disk to the end of loraforge"
        assert child.returncode == 1, messages[-3000:]
        assert "Traceback" not in messages
        assert failures and failures[-1]["kind"] == "disk_full", failures
        runs = [p for p in (disk / "runs").iterdir() if p.is_dir()]
        assert len(runs) == 1
        run = runs[0]
        assert str(run) in failures[-1]["message"] and "resume" in (failures[-1]["hint"] or "")
        assert not processes_naming(str(run)), "the trainer outlived loraforge"
        assert (run / "logs" / "stderr.log").stat().st_size > 0, "the log is lost"
        checkpoint = next(e for e in events if e["event"] == "checkpoint")
        saved = Path(checkpoint["path"])
        saved = saved if saved.is_absolute() else run / saved
        assert saved.exists() and (saved.is_dir() or saved.stat().st_size > 0), f"the checkpoint {saved} is lost"
        state = json.loads((run / "run.json").read_text())
        assert state["status"] == "failed", state
