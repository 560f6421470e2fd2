"""What loraforge costs on top of SimpleTuner: `loraforge train` wall time against running the rendered command.

    .venv/bin/python benchmarks/bench_simpletuner_overhead.py [--runs 2] [--steps 6]

Both sides train the same tiny SDXL model (built once, cached) for the same steps on the same data. The direct side
runs exactly the command `loraforge render` prints, in a fresh folder each time (SimpleTuner resumes from any
checkpoint it finds in its output folder). Runs alternate so drift on a shared machine hits both sides. Target:
orchestrated / direct <= 1.03 (best of N each). Needs `loraforge setup simpletuner`.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
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
