"""What nvidia-smi says about a card: its name and memory, why its clocks are held down, what else computes on it.

Parsing is separate from asking, so captured output (tests/fixtures/nvidia-smi/) exercises the same code. Every
query uses ``--format=csv,noheader,nounits``; a field the driver does not report reads ``[N/A]`` or
``[Not Supported]`` (per-process memory under Windows' WDDM driver, the driver model on Linux) and becomes None.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

BASIC_FIELDS = "index,uuid,name,memory.used,memory.total,utilization.gpu"
GPU_FIELDS = BASIC_FIELDS + ",clocks_throttle_reasons.active,driver_model.current"  # BASIC_FIELDS where refused
APP_FIELDS = "pid,process_name,used_memory"
# clocks_throttle_reasons.active is a bit mask (nvml.h, nvmlClocksThrottleReason*). Idle (0x1), an applications-clocks
# setting (0x2), sync boost (0x10) and display clocks (0x100) do not slow a busy card; these do:
SLOWING = {
    0x4: "software power cap",
    0x8: "hardware slowdown (temperature or power brake)",
    0x20: "software thermal slowdown",
    0x40: "hardware thermal slowdown",
    0x80: "hardware power brake",
}


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    used_mib: int | None
    total_mib: int | None
    utilization: int | None  # percent of the last sample period the card was busy
    throttle: int | None  # the clocks_throttle_reasons.active mask
    driver_model: str | None  # WDDM or TCC on Windows; None elsewhere

    @property
    def slowing(self) -> list[str]:
        return [why for bit, why in SLOWING.items() if self.throttle is not None and self.throttle & bit]


@dataclass(frozen=True)
class App:
    pid: int
    name: str
    used_mib: int | None


def _value(text: str) -> str | None:
    text = text.strip()
    return None if not text or text.startswith("[") else text  # [N/A], [Not Supported], [Unknown Error]


def _int(text: str) -> int | None:
    value = _value(text)
    try:
        return int(value, 0) if value is not None else None  # base 0: the throttle mask is hex (0x...)
    except ValueError:
        return None


def parse_gpus(text: str) -> list[Gpu]:
    """Rows of a GPU_FIELDS (or BASIC_FIELDS) query; lines that are not such rows (an error message) are skipped."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) not in (6, 8) or not parts[0].isdigit():
            continue
        extra = parts[6:] + [""] * (8 - len(parts))
        gpus.append(
            Gpu(
                index=int(parts[0]),
                uuid=parts[1],
                name=parts[2],
                used_mib=_int(parts[3]),
                total_mib=_int(parts[4]),
                utilization=_int(parts[5]),
                throttle=_int(extra[0]),
                driver_model=_value(extra[1]),
            )
        )
    return gpus


def parse_apps(text: str) -> list[App]:
    apps = []
    for line in text.splitlines():
        pid, _, rest = line.partition(",")
        name, _, used = rest.rpartition(",")  # a process name may hold commas; the memory never does
        if pid.strip().isdigit() and name:
            apps.append(App(int(pid), name.strip(), _int(used)))
    return apps


def pick(gpus: list[Gpu], visible: str | None) -> Gpu | None:
    """The card a run uses: the first entry of CUDA_VISIBLE_DEVICES (an index or a UUID, as nvidia-smi numbers
    them), else the first card."""
    first = (visible or "").split(",")[0].strip()
    for gpu in gpus:
        if first and (first == str(gpu.index) or gpu.uuid.startswith(first)):
            return gpu
    return gpus[0] if gpus and not first else None


def _ask(args: list[str], timeout: float) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def query_gpus(timeout: float = 10) -> list[Gpu]:
    fmt = "--format=csv,noheader,nounits"
    text = _ask([f"--query-gpu={GPU_FIELDS}", fmt], timeout)
    if text is None:  # an old driver refuses the whole query for one field it does not know
        text = _ask([f"--query-gpu={BASIC_FIELDS}", fmt], timeout)
    return parse_gpus(text or "")


def query_apps(timeout: float = 10) -> list[App] | None:
    text = _ask([f"--query-compute-apps={APP_FIELDS}", "--format=csv,noheader,nounits"], timeout)
    return None if text is None else parse_apps(text)
