"""What loraforge costs on top of sd-scripts, plus CLI start-up and kohya log-parser throughput.

    .venv/bin/python benchmarks/bench_kohya_overhead.py [--runs 3] [--steps 4]

Training: `loraforge train` against the command `loraforge render` prints (the same argv the run folder keeps in
rendered/command.txt), on the same tiny SD 1.5 (built once, cached), same data and steps, alternating so drift on
a shared machine hits both sides; medians reported. The two wall times differ by seconds from run to run on a shared
machine, so loraforge's own time is measured as well: from the command's start to the trainer's start, plus from the
trainer's exit to the command's end (the run's critical path; what runs beside the trainer is not on it).
`loraforge --help`: median of 20. Parser: a synthetic ~50 MB
log of progress bars drawn as sd-scripts draws them (each step twice), fed in 64 KiB chunks. Needs `loraforge setup kohya`.
"""

from __future__ import annotations

import argparse
import json
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


# `loraforge train`, with the moments its trainer was started and had exited noted (wall clock) in the file argv[1]
TIMED = """
import json, sys, time
from pathlib import Path
import orchestrator.training as training
marks, run_process = {}, training.run_process
def timed(*args, **kwargs):
    marks["spawn"] = time.time()
    try:
        return run_process(*args, **kwargs)
    finally:
        marks["exited"] = time.time()
training.run_process = timed
from orchestrator.cli import main
try:
    sys.exit(main(sys.argv[2:]))
finally:
    Path(sys.argv[1]).write_text(json.dumps(marks))
"""


def orchestrated(job: Path, own: list[float]) -> float:
    """The run's wall time; appends to ``own`` loraforge's own time on the run's critical path: from the command's
    start to the trainer's, and from the trainer's exit to the command's."""
    marks = job.parent / "marks.json"
    start, wall = time.time(), time.perf_counter()
    argv = [sys.executable, "-c", TIMED, str(marks), "train", str(job), "-b", "kohya", "--quiet"]
    subprocess.run(argv, check=True, cwd=REPO)
    wall, end = time.perf_counter() - wall, time.time()
    noted = json.loads(marks.read_text())
    own.append((noted["spawn"] - start) + (end - noted["exited"]))
    return wall


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
        own: list[float] = []
        for i in range(args.runs):
            folder = root / f"direct-{i}"
            folder.mkdir()
            pair = [lambda: ours.append(orchestrated(job, own)), lambda f=folder: theirs.append(direct(job, f))]
            for run in pair if i % 2 == 0 else reversed(pair):
                run()
            print(
                f"run {i + 1}: loraforge {ours[-1]:.2f} s (its own time {own[-1]:.3f} s), direct {theirs[-1]:.2f} s",
                flush=True,
            )
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(
        f"kohya, tiny SD 1.5, {args.steps} steps, {args.runs} runs each: loraforge median "
        f"{statistics.median(ours):.2f} s, direct median {statistics.median(theirs):.2f} s; ratio {ratio:.3f}"
    )
    # the ratio of two noisy wall times; loraforge's own time is measured, not inferred from their difference
    mine = statistics.median(own)
    print(
        f"loraforge's own time on the critical path (start -> trainer, trainer exit -> done): median {mine:.3f} s, "
        f"{mine / statistics.median(theirs):.1%} of the direct run; own-time ratio {1 + mine / statistics.median(theirs):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
