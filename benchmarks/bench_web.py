"""`loraforge serve` under measurement: the runs page with many runs, event latency to a real browser, and load.

    .venv/bin/python benchmarks/bench_web.py runs-page [--runs 500]      # first byte of / (targets: < 200 ms)
    .venv/bin/python benchmarks/bench_web.py latency [--events 200]      # trainer writes -> Chromium has it (< 1 s)
    .venv/bin/python benchmarks/bench_web.py load [--viewers 50 --seconds 60]   # 50 live viewers of one run
    .venv/bin/python benchmarks/bench_web.py all                          # the three; --json for machine output

Each part starts `loraforge serve` as its own process on a free loopback port over run folders made here. The
"trainer" appends events to events.jsonl exactly as a run's event sink does (orchestrator.events.EventLog: one
flushed line per event), stamping each with the wall-clock time it wrote it. Latency is measured in headless
Chromium (Debian's package through Playwright's driver): the time an EventSource on the page receives the event,
and the time the run page's own step counter shows it. The load's viewers are server-sent-event clients on
threads of this process (50 browsers would measure the browsers on a 2-core machine); they check that every step
arrives once, in order. Server memory (RSS) and CPU come from psutil, sampled every second.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator.events import Checkpoint, EventLog, Finished, Phase, Progress  # noqa: E402
from orchestrator.job import build_job  # noqa: E402
from orchestrator.runs import RunDir, create_run  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


# --- shared ---------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, runs: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "serve", "--runs", str(runs), "--port", str(self.port),
             "--gpus", "none"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO, text=True,
        )  # fmt: skip
        line = self.process.stdout.readline() if self.process.stdout else ""
        if "loraforge serve:" not in line:
            raise SystemExit(f"serve did not start: {line}{self.process.stdout.read() if self.process.stdout else ''}")
        threading.Thread(target=lambda: self.process.stdout and self.process.stdout.read(), daemon=True).start()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def make_runs(root: Path, count: int, steps: int) -> list[RunDir]:
    dataset = root / "dataset"
    dataset.mkdir(parents=True, exist_ok=True)
    job = build_job({"name": "bench", "base_model": "stabilityai/stable-diffusion-xl-base-1.0", "family": "sdxl",
                     "dataset": str(dataset), "training": {"steps": max(steps, 1)}})  # fmt: skip
    runs = []
    for index in range(count):
        run = create_run(job, "kohya" if index % 2 else "simpletuner", root=root / "runs")
        log = EventLog(run.events_file)
        for phase in ("setup", "loading", "training"):
            log.write(Phase(phase))
        for step in range(1, steps + 1):
            log.write(Progress(step, steps, epoch=1, loss=0.3 / step**0.3, lr=1e-4, it_per_s=1.8, eta_s=steps - step))
            if step % 100 == 0:
                log.write(Checkpoint(str(run.output / f"bench-{step:06d}.safetensors"), step))
        if index % 3:
            log.write(Finished(str(run.output / "bench.safetensors"), 600.0))
        log.close()
        run.update_state(status="finished" if index % 3 else "running")
        runs.append(run)
    return runs


def time_to_first_byte(port: int, path: str) -> tuple[float, float]:
    """(seconds to the response's first byte, seconds to its last) for one GET on a fresh connection."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.perf_counter()
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        first = sock.recv(1)
        first_at = time.perf_counter()
        while chunk := sock.recv(65536):
            first += chunk
        done_at = time.perf_counter()
    assert first.startswith(b"HTTP/1.1 200"), first[:100]
    return first_at - start, done_at - start


# --- 1. the runs page -----------------------------------------------------------------------------------------
def bench_runs_page(count: int, steps: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lf-bench-web-") as tmp:
        made = time.perf_counter()
        make_runs(Path(tmp), count, steps)
        made = time.perf_counter() - made
        size = sum(f.stat().st_size for f in Path(tmp, "runs").rglob("events.jsonl"))
        server = Server(Path(tmp) / "runs")
        try:
            cold = time_to_first_byte(server.port, "/")
            warm = [time_to_first_byte(server.port, "/") for _ in range(repeats)]
            api = [time_to_first_byte(server.port, "/api/runs") for _ in range(repeats)]
        finally:
            server.stop()
    firsts = sorted(w[0] for w in warm)
    return {
        "runs": count,
        "events_per_run": steps + steps // 100 + 4,
        "events_bytes": size,
        "made_s": round(made, 1),
        "cold_first_byte_ms": round(cold[0] * 1000, 1),
        "cold_full_page_ms": round(cold[1] * 1000, 1),
        "first_byte_ms_median": round(statistics.median(firsts) * 1000, 1),
        "first_byte_ms_max": round(firsts[-1] * 1000, 1),
        "full_page_ms_median": round(statistics.median(w[1] for w in warm) * 1000, 1),
        "api_runs_ms_median": round(statistics.median(a[1] for a in api) * 1000, 1),
        "target_first_byte_ms": 200,
    }


# --- 2. event latency to a browser ----------------------------------------------------------------------------
WATCH = """([name]) => {
  window.__seen = [];
  window.__shown = [];
  const source = new EventSource("/api/events?run=" + encodeURIComponent(name));
  source.onmessage = (m) => {
    const d = JSON.parse(m.data);
    if (d.e.event === "progress") window.__seen.push([d.e.step, performance.timeOrigin + performance.now()]);
  };
  new MutationObserver(() => {
    const text = document.getElementById("step").textContent;
    if (text.includes("/")) window.__shown.push([parseInt(text), performance.timeOrigin + performance.now()]);
  }).observe(document.getElementById("step"), { childList: true, characterData: true, subtree: true });
}"""


def bench_latency(events: int, interval: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="lf-bench-web-") as tmp:
        (run,) = make_runs(Path(tmp), 1, 0)
        server = Server(Path(tmp) / "runs")
        written: dict[int, float] = {}
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{server.port}/runs/{run.path.name}")
                page.wait_for_selector("#step")
                page.evaluate(WATCH, [run.path.name])
                page.wait_for_timeout(1000)
                log = EventLog(run.events_file)
                for step in range(1, events + 1):
                    written[step] = time.time() * 1000
                    log.write(Progress(step, events, loss=1 / step, it_per_s=1 / interval))
                    time.sleep(interval)
                log.close()
                page.wait_for_timeout(1500)
                seen = page.evaluate("window.__seen")
                shown = page.evaluate("window.__shown")
                browser.close()
        finally:
            server.stop()
    received = sorted(at - written[step] for step, at in seen if step in written)
    first_shown: dict[int, float] = {}
    for step, at in shown:  # the counter is redrawn on every event: a step's first drawing is when it showed
        first_shown.setdefault(step, at)
    drawn = sorted(at - written[step] for step, at in first_shown.items() if step in written)
    return {
        "events": events,
        "interval_s": interval,
        "received": len(received),
        "received_ms_median": round(statistics.median(received), 1),
        "received_ms_p95": round(received[int(len(received) * 0.95) - 1], 1),
        "received_ms_max": round(received[-1], 1),
        "shown": len(drawn),
        "shown_ms_median": round(statistics.median(drawn), 1) if drawn else None,
        "shown_ms_max": round(drawn[-1], 1) if drawn else None,
        "target_ms": 1000,
    }


# --- 3. load: many live viewers of one run --------------------------------------------------------------------
class Viewer(threading.Thread):
    def __init__(self, port: int, name: str, last: int) -> None:
        super().__init__(daemon=True)
        self.port, self.name_, self.last = port, name, last
        self.steps: list[int] = []
        self.error: str | None = None

    def run(self) -> None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            connection.request("GET", f"/api/events?run={self.name_}")
            response = connection.getresponse()
            if response.status != 200:
                self.error = f"status {response.status}"
                return
            while True:
                line = response.fp.readline()
                if not line:
                    self.error = "the stream ended"
                    return
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])["e"]
                    if event["event"] == "progress":
                        self.steps.append(event["step"])
                        if event["step"] >= self.last:
                            connection.close()
                            return
        except OSError as exc:
            self.error = str(exc)


def bench_load(viewers: int, seconds: float, rate: float) -> dict[str, Any]:
    import psutil

    total = int(seconds * rate)
    with tempfile.TemporaryDirectory(prefix="lf-bench-web-") as tmp:
        (run,) = make_runs(Path(tmp), 1, 0)
        server = Server(Path(tmp) / "runs")
        process = psutil.Process(server.process.pid)
        samples: list[tuple[float, float, float]] = []  # (t, rss MiB, cpu %)
        try:
            process.cpu_percent(None)
            rss_idle = process.memory_info().rss / 2**20
            watchers = [Viewer(server.port, run.path.name, total) for _ in range(viewers)]
            for watcher in watchers:
                watcher.start()
            time.sleep(2)
            rss_connected = process.memory_info().rss / 2**20
            log = EventLog(run.events_file)
            start = time.monotonic()
            next_sample = start + 1
            for step in range(1, total + 1):
                log.write(
                    Progress(step, total, epoch=1, loss=1 / step, lr=1e-4, it_per_s=rate, eta_s=(total - step) / rate)
                )
                target = start + step / rate
                while (now := time.monotonic()) < target:
                    if now >= next_sample:
                        samples.append((now - start, process.memory_info().rss / 2**20, process.cpu_percent(None)))
                        next_sample += 1
                    time.sleep(min(0.005, max(0.0, target - now)))
            log.close()
            for watcher in watchers:
                watcher.join(timeout=30)
            rss_end = process.memory_info().rss / 2**20
            threads = process.num_threads()
        finally:
            server.stop()
    counts = [len(w.steps) for w in watchers]
    complete = [w.steps == list(range(1, total + 1)) for w in watchers]
    half = len(samples) // 2
    cpus = [s[2] for s in samples]
    return {
        "viewers": viewers,
        "seconds": seconds,
        "steps_per_s": rate,
        "steps": total,
        "viewers_with_every_step_in_order": sum(complete),
        "events_seen_per_viewer_min": min(counts),
        "events_seen_per_viewer_max": max(counts),
        "viewer_errors": sorted({w.error for w in watchers if w.error}),
        "rss_mib_idle": round(rss_idle, 1),
        "rss_mib_connected": round(rss_connected, 1),
        "rss_mib_peak": round(max(s[1] for s in samples), 1),
        "rss_mib_first_half_max": round(max(s[1] for s in samples[:half]), 1),
        "rss_mib_second_half_max": round(max(s[1] for s in samples[half:]), 1),
        "rss_mib_end": round(rss_end, 1),
        "cpu_percent_mean": round(statistics.mean(cpus), 1),
        "cpu_percent_max": round(max(cpus), 1),
        "server_threads_at_end": threads,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["runs-page", "latency", "load", "all"])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--steps", type=int, default=300, help="progress events in each of the many runs")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=10, help="steps per second the load's trainer writes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("LORAFORGE_HOME", tempfile.mkdtemp(prefix="lf-bench-home-"))
    results: dict[str, Any] = {}
    if args.part in ("runs-page", "all"):
        results["runs_page"] = bench_runs_page(args.runs, args.steps, args.repeats)
    if args.part in ("latency", "all"):
        results["latency"] = bench_latency(args.events, args.interval)
    if args.part in ("load", "all"):
        results["load"] = bench_load(args.viewers, args.seconds, args.rate)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for part, figures in results.items():
            print(f"[{part}]")
            for key, value in figures.items():
                print(f"  {key:<36} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
