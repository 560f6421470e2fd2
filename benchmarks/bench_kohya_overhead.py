"""What loraforge costs on top of sd-scripts, plus CLI start-up and kohya log-parser throughput.

    .venv/bin/python benchmarks/bench_kohya_overhead.py [--runs 3] [--steps 4] [--against REF]

Training: `loraforge train` against the command `loraforge render` prints (the same argv the run folder keeps in
rendered/command.txt), on the same tiny SD 1.5 (built once, cached), same data and steps, alternating so drift on
a shared machine hits both sides; medians reported. The two wall times differ by seconds from run to run on a shared
machine, so the two ends of the run are measured as well, on both sides: from the command's start to the start of
sd-scripts' training script (noted from inside the script by a sitecustomize put on PYTHONPATH for both sides), and
loraforge's own time from its trainer's exit to the command's end. Their sum is what loraforge adds to the run.
With --against REF, `loraforge train` of that commit (its orchestrator/, backends/, templates/) runs too, in turn.
`loraforge --help`: median of 20. Parser: a synthetic ~50 MB
log of progress bars drawn as sd-scripts draws them (each step twice), fed in 64 KiB chunks. Needs `loraforge setup kohya`.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
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


# put on PYTHONPATH for both sides: the moment sd-scripts' training script started, noted from inside it
MARKER = """
import os, sys, time
if sys.argv and os.path.basename(sys.argv[0]) == "train_network.py":
    def _note(what):
        with open(os.environ["LF_BENCH_MARKS"], "a") as marks:
            marks.write(f"{what} {time.time()}\\n")
    _note("start")
    if os.environ.get("LF_BENCH_STOP_AT_START"):  # --starts: only the way to the script's start is timed
        os._exit(0)
"""


# `loraforge train`, noting the moment its trainer's process had exited (and its output was read) in the marks file
TIMED = """
import os, sys, time
import orchestrator.training as training
run_process = training.run_process
def timed(*args, **kwargs):
    try:
        return run_process(*args, **kwargs)
    finally:
        with open(os.environ["LF_BENCH_MARKS"], "a") as marks:
            marks.write(f"exited {time.time()}\\n")
training.run_process = timed
from orchestrator.cli import main
sys.exit(main(sys.argv[1:]))
"""


def timed(argv: list[str], folder: Path, quick: bool = False, **kwargs: object) -> tuple[float, float, float]:
    """Run ``argv``; (wall time, command start -> training script start, trainer exit -> command end when
    loraforge noted the trainer's exit, else 0: by hand the command ends with its trainer)."""
    marks = folder / "marks.txt"
    marks.unlink(missing_ok=True)
    site = folder / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(MARKER, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(site), "LF_BENCH_MARKS": str(marks)}
    if quick:
        env["LF_BENCH_STOP_AT_START"] = "1"
    start = time.time()
    subprocess.run(argv, check=not quick, env=env, **kwargs)  # type: ignore[call-overload]
    end = time.time()
    noted = dict(line.split() for line in marks.read_text().splitlines())
    return end - start, float(noted["start"]) - start, end - float(noted["exited"]) if "exited" in noted else 0.0


def orchestrated(job: Path, folder: Path, tree: Path = REPO, quick: bool = False) -> tuple[float, float, float]:
    """`loraforge train` of the code in ``tree`` (this checkout, or --against's commit)."""
    argv = [sys.executable, "-c", TIMED, "train", str(job), "-b", "kohya", "--quiet"]
    return timed(argv, folder, quick, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if quick else None)


def archive(ref: str, into: Path) -> Path:
    """REF's orchestrator/, backends/ and templates/ (what `loraforge train` runs), unpacked into ``into``."""
    data = subprocess.run(
        ["git", "archive", "--format=tar", ref, "orchestrator", "backends", "templates"],
        check=True,
        capture_output=True,
        cwd=REPO,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def direct(job: Path, folder: Path, quick: bool = False) -> tuple[float, float, float]:
    out = subprocess.run(
        [*LORAFORGE, "render", str(job), "-b", "kohya", "-o", str(folder / "rendered")],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    command = out.stdout.strip().splitlines()[-1]
    with (folder / "stdout.log").open("wb") as stdout, (folder / "stderr.log").open("wb") as stderr:
        return timed(["bash", "-c", command], folder, quick, stdout=stdout, stderr=stderr)


def _median(rows: list[tuple[float, float, float]], column: int) -> float:
    return statistics.median(row[column] for row in rows)


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
    parser.add_argument("--against", metavar="REF", help="also run `loraforge train` of this commit, alternating")
    parser.add_argument(
        "--starts", type=int, default=0, help="also this many rounds timing only the way to the script's start"
    )
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
        older = archive(args.against, root / "against") if args.against else None
        ours: list[tuple[float, float, float]] = []
        theirs: list[tuple[float, float, float]] = []
        before: list[tuple[float, float, float]] = []
        for i in range(args.runs):
            folder = root / f"direct-{i}"
            folder.mkdir()
            sides = [lambda: ours.append(orchestrated(job, root)), lambda f=folder: theirs.append(direct(job, f))]
            if older is not None:
                sides.append(lambda: before.append(orchestrated(job, root, older)))
            for side in sides[i % len(sides) :] + sides[: i % len(sides)]:  # a different side first each round
                side()
            print(f"run {i + 1}: " + "; ".join(
                f"{name} {row[-1][0]:.2f} s (script started after {row[-1][1]:.3f} s, own time after the trainer's "
                f"exit {row[-1][2]:.3f} s)"
                for name, row in (("loraforge", ours), ("direct", theirs), (args.against, before)) if row
            ), flush=True)  # fmt: skip
        # many short rounds: the script exits as it starts, so the start side gets samples enough to beat the noise
        starts: dict[str, list[float]] = {"loraforge": [], "direct": [], f"loraforge at {args.against}": []}
        for i in range(args.starts):
            folder = root / f"start-{i}"
            folder.mkdir()
            quick = [
                lambda: starts["loraforge"].append(orchestrated(job, root, quick=True)[1]),
                lambda f=folder: starts["direct"].append(direct(job, f, quick=True)[1]),
            ]
            if older is not None:
                quick.append(
                    lambda: starts[f"loraforge at {args.against}"].append(orchestrated(job, root, older, True)[1])
                )
            for side in quick[i % len(quick) :] + quick[: i % len(quick)]:
                side()
        if args.starts:
            print(f"command start -> training script start, median of {args.starts} quick rounds: " + ", ".join(
                f"{name} {statistics.median(times):.3f} s (quartiles {statistics.quantiles(times, n=4)[0]:.3f}-"
                f"{statistics.quantiles(times, n=4)[2]:.3f})"
                for name, times in starts.items() if times
            ), flush=True)  # fmt: skip
    if not theirs:
        return 0
    by_hand = _median(theirs, 0)
    print(f"kohya, tiny SD 1.5, {args.steps} steps, {args.runs} runs each, medians; direct: {by_hand:.2f} s")
    for name, rows in (("loraforge", ours), (f"loraforge at {args.against}", before)):
        if not rows:
            continue
        # the ratio of two noisy wall times says little at this size; what loraforge adds to the critical path
        # is measured at its two ends, where the training script starts and where it ends
        wall, start, end = (
            _median(rows, 0),
            _median(rows, 1) - _median(theirs, 1),
            _median(rows, 2),
        )
        print(
            f"{name}: {wall:.2f} s, wall ratio {wall / by_hand:.3f}; added on the critical path {start + end:+.3f} s "
            f"({start:+.3f} s before the training script starts, {end:+.3f} s after the trainer exits), "
            f"{(start + end) / by_hand:+.1%} of the direct run"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
