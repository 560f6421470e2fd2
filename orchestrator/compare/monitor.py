"""Peak RAM and GPU memory of a training process tree, sampled while it runs.

RAM: the resident set of the child and every process it started (accelerate runs the trainer as a grandchild,
data loaders add more), summed per sample; the peak of those sums is reported. psutil walks the tree on Linux,
macOS and Windows alike, where /proc would be Linux only. GPU: ``nvidia-smi``'s per-process memory for the same
processes, when nvidia-smi exists; where it cannot see them (a container shows the host's process ids), the growth
of the arm's own GPU's used memory since the arm started.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
from dataclasses import dataclass

INTERVAL_S = 0.5


@dataclass
class Peaks:
    ram_bytes: int | None = None
    gpu_bytes: int | None = None


class TreeMonitor:
    """Samples the process tree under ``pid`` on a daemon thread until :meth:`stop`."""

    def __init__(self, pid: int, gpu: str | None = None, interval_s: float = INTERVAL_S) -> None:
        self.pid = pid
        self.gpu = gpu
        self.interval_s = interval_s
        self.peaks = Peaks()
        self._done = threading.Event()
        self._nvidia_smi = shutil.which("nvidia-smi")
        self._baseline = gpu_used_mib(self._nvidia_smi, gpu) if self._nvidia_smi and gpu is not None else None
        self._thread = threading.Thread(target=self._loop, name=f"monitor-{pid}", daemon=True)
        self._thread.start()

    def stop(self) -> Peaks:
        self._done.set()
        self._thread.join(timeout=10)
        return self.peaks

    def _loop(self) -> None:
        try:
            import psutil
        except ImportError:  # the `report` extra is not installed: no RAM figure, the comparison still runs
            return
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while True:
            pids = self._sample_ram(psutil, root)
            if pids and self._nvidia_smi:
                self._sample_gpu(pids)
            if self._done.wait(self.interval_s) or not pids:
                return

    def _sample_ram(self, psutil, root) -> set[int]:  # type: ignore[no-untyped-def]
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return set()
        total = 0
        pids = set()
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
                pids.add(proc.pid)
        if pids and (self.peaks.ram_bytes is None or total > self.peaks.ram_bytes):
            self.peaks.ram_bytes = total
        return pids

    def _sample_gpu(self, pids: set[int]) -> None:
        used = gpu_memory_by_pid(self._nvidia_smi or "nvidia-smi")
        if used is None:
            return
        mine = [mib for pid, mib in used.items() if pid in pids]
        if mine:
            total = sum(mine) * 2**20
        elif self._baseline is not None and self._nvidia_smi:
            now = gpu_used_mib(self._nvidia_smi, self.gpu)
            if now is None:
                return
            total = max(now - self._baseline, 0) * 2**20
        else:
            total = 0
        if self.peaks.gpu_bytes is None or total > self.peaks.gpu_bytes:
            self.peaks.gpu_bytes = total


def gpu_used_mib(nvidia_smi: str, gpu: str | None) -> int | None:
    """Used memory of GPU ``gpu`` (an index as nvidia-smi numbers them) in MiB."""
    try:
        out = subprocess.run(
            [nvidia_smi, "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(gpu) and parts[1].isdigit():
            return int(parts[1])
    return None


def gpu_memory_by_pid(nvidia_smi: str = "nvidia-smi") -> dict[int, int] | None:
    """pid -> MiB used on any GPU, from nvidia-smi; None where it cannot be asked."""
    try:
        out = subprocess.run(
            [nvidia_smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    used: dict[int, int] = {}
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            used[int(parts[0])] = used.get(int(parts[0]), 0) + int(parts[1])
    return used


def visible_gpus() -> list[str]:
    """The GPUs arms may be spread over: CUDA_VISIBLE_DEVICES if set, else every GPU nvidia-smi lists."""
    import os

    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()] if out.returncode == 0 else []
