"""Peak RAM is measured over the whole process tree: a grandchild's memory counts."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from orchestrator.compare.monitor import TreeMonitor

pytest.importorskip("psutil", reason="pip install -e '.[report]'")

GRANDCHILD = "b = bytearray(120 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); input()"
PARENT = (
    "import subprocess, sys\n"
    f"child = subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}], stdin=sys.stdin, stdout=subprocess.PIPE, text=True)\n"
    "print(child.stdout.readline().strip(), flush=True)\n"
    "child.wait()\n"
)


def test_peak_ram_includes_grandchildren() -> None:
    proc = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    monitor = TreeMonitor(proc.pid, interval_s=0.05)
    try:
        assert proc.stdout.readline().strip() == "ready"  # the grandchild holds its 120 MiB now
        deadline = time.monotonic() + 60
        while (monitor.peaks.ram_bytes or 0) < 120 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the monitor's next sample, not for the processes
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=60)
    peaks = monitor.stop()
    assert peaks.ram_bytes is not None and peaks.ram_bytes >= 120 * 2**20
    assert peaks.gpu_bytes in (None, 0)  # no nvidia-smi, or no GPU process in the tree: never a made-up figure
