"""What loraforge costs on top of sd-scripts, plus CLI start-up and kohya log-parser throughput.

    .venv/bin/python benchmarks/bench_kohya_overhead.py [--runs 3] [--steps 4]

Training: `loraforge train` against the command `loraforge render` prints (the same argv the run folder keeps in
rendered/command.txt), on the same tiny SD 1.5 (built once, cached), same data and steps, alternating so drift on
a shared machine hits both sides; medians reported. `loraforge --help`: median of 20. Parser: a synthetic ~50 MB
log of progress bars drawn as sd-scripts draws them (each step twice), fed in 64 KiB chunks. Needs `loraforge setup kohya`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
LORAFORGE = [sys.executable, "-m", "orchestrator.cli"]


def write_job(folder: Path, model: Path, dataset: Path, steps: int) -> Path:
    job = {
        "name": "bench-kohya",
        "base_model": str(model),
        "dataset": str(dataset),
        "network": {"rank": 4},
        "training": {"steps": steps, "batch_size": 2, "resolution": 64, "precision": "fp32"},
        "output": {"dir": str(folder / "runs")},
    }
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    return path


def orchestrated(job: Path) -> float:
    start = time.perf_counter()
    subprocess.run([*LORAFORGE, "train", str(job), "-b", "kohya", "--quiet"], check=True, cwd=REPO)
    return time.perf_counter() - start


def direct(job: Path, folder: Path) -> float:
    out = subprocess.run(
        [*LORAFORGE, "render", str(job), "-b", "kohya", "-o", str(folder / "rendered")],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    command = out.stdout.strip().splitlines()[-1]
    with (folder / "stdout.log").open("wb") as stdout, (folder / "stderr.log").open("wb") as stderr:
        start = time.perf_counter()
        subprocess.run(["bash", "-c", command], check=True, stdout=stdout, stderr=stderr)
        return time.perf_counter() - start


def help_time(count: int = 20) -> float:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        subprocess.run([*LORAFORGE, "--help"], check=True, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def parser_throughput(target_mb: int = 50) -> float:
    from backends.kohya import KohyaBackend

    # as sd-scripts draws it: each step twice (the new count with the old average, then the new average)
    lines = [
        f"steps:  {i % 100}%|███▌      | {i}/100000 [00:{i % 60:02d}<00:10,  1.23it/s, avr_loss={0.1 + j * 1e-6:.4f}]\r"
        for i in range(1, 1001)
        for j in (i - 1, i)
    ]
    block = "".join(lines).encode() + b"epoch 1/10\nsaving checkpoint: out/bench-000001.safetensors\n"
    data = block * max(1, target_mb * 1024 * 1024 // len(block))
    parser = KohyaBackend().parser()
    start = time.perf_counter()
    for offset in range(0, len(data), 65536):
        parser.feed(data[offset : offset + 65536], "stdout")
    parser.finish(0)
    return len(data) / (1024 * 1024) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--skip-training", action="store_true", help="only --help time and parser throughput")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    print(f"loraforge --help: median {help_time():.3f} s over 20", flush=True)
    print(f"kohya parser: {parser_throughput():.1f} MB/s on a synthetic ~50 MB log (target >= 20)", flush=True)
    if args.skip_training:
        return 0
    from orchestrator.envs import get_env
    from orchestrator.tiny import tiny_sd15
    from orchestrator.tiny.dataset import make_dataset

    model = tiny_sd15(get_env("kohya").python)
    with tempfile.TemporaryDirectory(prefix="lf-bench-kohya-") as tmp:
        root = Path(tmp)
        job = write_job(root, model, make_dataset(root / "data", count=4, size=64), args.steps)
        ours: list[float] = []
        theirs: list[float] = []
        for i in range(args.runs):
            folder = root / f"direct-{i}"
            folder.mkdir()
            pair = [lambda: ours.append(orchestrated(job)), lambda f=folder: theirs.append(direct(job, f))]
            for run in pair if i % 2 == 0 else reversed(pair):
                run()
            print(f"run {i + 1}: loraforge {ours[-1]:.2f} s, direct {theirs[-1]:.2f} s", flush=True)
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(
        f"kohya, tiny SD 1.5, {args.steps} steps, {args.runs} runs each: loraforge median "
        f"{statistics.median(ours):.2f} s, direct median {statistics.median(theirs):.2f} s; ratio {ratio:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
