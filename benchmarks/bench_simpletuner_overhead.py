"""What loraforge costs on top of SimpleTuner: `loraforge train` wall time against running the rendered command,
and how fast the SimpleTuner parser reads output and webhook payloads.

    .venv/bin/python benchmarks/bench_simpletuner_overhead.py [--runs 2] [--steps 6] [--skip-training]

Both sides train the same tiny SDXL model (built once, cached) for the same steps on the same data. The direct side
runs exactly the command `loraforge render` prints, in a fresh folder each time (SimpleTuner resumes from any
checkpoint it finds in its output folder). Runs alternate so drift on a shared machine hits both sides. Target:
orchestrated / direct <= 1.03 (best of N each). Needs `loraforge setup simpletuner`.

Parser: a synthetic ~50 MB log drawn as SimpleTuner draws it (each step three times on stderr: the new count with
the old loss, the new loss, a clock redraw; an INFO line on stdout between steps) fed in 64 KiB chunks; and 100,000
training.status payloads shaped like the real ones.
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
        "name": "bench-st",
        "base_model": str(model),
        "dataset": str(dataset),
        "network": {"rank": 4},
        "training": {"steps": steps, "resolution": 128, "precision": "fp32", "gradient_checkpointing": False},
        "saving": {"every_n_steps": steps},
        "output": {"dir": str(folder / "runs")},
    }
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    return path


def orchestrated(job: Path) -> float:
    start = time.perf_counter()
    subprocess.run([*LORAFORGE, "train", str(job), "-b", "simpletuner", "--quiet"], check=True, cwd=REPO)
    return time.perf_counter() - start


def direct(job: Path, folder: Path) -> float:
    rendered = folder / "rendered"
    out = subprocess.run(
        [*LORAFORGE, "render", str(job), "-b", "simpletuner", "-o", str(rendered)],
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


def parser_throughput(target_mb: int = 50) -> float:
    from backends.simpletuner import SimpleTunerLogParser

    bar = "\x1b[AEpoch 1/2, Steps:  {p}%|###       | {n}/100000 [00:{c:02d}<00:10,  1.23it/s, lr=0.0001, step_loss={loss:.3g}]\r"
    stderr = "".join(
        bar.format(p=i % 100, n=i, c=i % 60, loss=loss)
        for i in range(1, 1001)
        for loss in (0.1 + (i - 1) * 1e-4, 0.1 + i * 1e-4, 0.1 + i * 1e-4)
    ).encode()
    stdout = b"\x1b[0m[RANK 0] 2026-11-28 17:10:03,360 [INFO] a line of SimpleTuner's own logging\x1b[0m\n" * 1000
    copies = max(1, target_mb * 1024 * 1024 // (len(stderr) + len(stdout)))
    parser = SimpleTunerLogParser()
    start = time.perf_counter()
    for _ in range(copies):
        for stream, data in (("stderr", stderr), ("stdout", stdout)):
            for offset in range(0, len(data), 65536):
                parser.feed(data[offset : offset + 65536], stream)
    parser.finish(0)
    return copies * (len(stderr) + len(stdout)) / (1024 * 1024) / (time.perf_counter() - start)


def payload_rate(count: int = 100_000) -> float:
    from backends.simpletuner import SimpleTunerLogParser

    parser = SimpleTunerLogParser()
    start = time.perf_counter()
    for step in range(1, count + 1):
        parser.payload(
            {
                "type": "training.status",
                "job_id": "bench",
                "data": {"global_step": step, "current_epoch": 1, "total_num_steps": count, "final_epoch": 1},
                "progress": {
                    "current": step,
                    "total": count,
                    "percent": 100 * step / count,
                    "eta_seconds": 1.0,
                    "metrics": {"loss": 0.1, "learning_rate": 1e-4, "epoch": 1, "seconds_per_step": 0.2},
                },
            }  # fmt: skip
        )
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--skip-training", action="store_true", help="only the parser's throughput")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    print(f"simpletuner parser: {parser_throughput():.1f} MB/s on a synthetic ~50 MB log", flush=True)
    print(f"simpletuner webhooks: {payload_rate():,.0f} training.status payloads/s", flush=True)
    if args.skip_training:
        return 0
    from orchestrator.envs import get_env
    from orchestrator.tiny import tiny_sdxl
    from orchestrator.tiny.dataset import make_dataset

    env = get_env("simpletuner")
    model = tiny_sdxl(env.python)
    with tempfile.TemporaryDirectory(prefix="lf-bench-st-") as tmp:
        root = Path(tmp)
        dataset = make_dataset(root / "data", count=4, size=128)
        job = write_job(root, model, dataset, args.steps)
        ours: list[float] = []
        theirs: list[float] = []
        for i in range(args.runs):
            folder = root / f"direct-{i}"
            folder.mkdir()
            if i % 2 == 0:
                ours.append(orchestrated(job))
                theirs.append(direct(job, folder))
            else:
                theirs.append(direct(job, folder))
                ours.append(orchestrated(job))
            print(f"run {i + 1}: loraforge {ours[-1]:.2f} s, direct {theirs[-1]:.2f} s", flush=True)
    ratio = min(ours) / min(theirs)
    print(
        f"simpletuner, tiny SDXL, {args.steps} steps, {args.runs} runs each: loraforge best {min(ours):.2f} s "
        f"(median {statistics.median(ours):.2f}), direct best {min(theirs):.2f} s "
        f"(median {statistics.median(theirs):.2f}); ratio {ratio:.3f} (target <= 1.03)"
    )
    return 0 if ratio <= 1.03 else 1


if __name__ == "__main__":
    sys.exit(main())
