"""Time to the first training step: warm starts (orchestrator/warm.py) against cold ones, on the tiny SDXL.

    .venv/bin/python benchmarks/bench_first_step.py [--runs 2] [--only oneshot|compare]

- One-shot `loraforge train PHOTOS --backend simpletuner` (prep, template captions, training), LORAFORGE_WARM=0
  (the backend's own launcher, started when loraforge is ready: what every run did before) against warm starts:
  the time from the run's setup phase (render, then launch) to its first step, and from the command's start.
- `loraforge compare --backend simpletuner --vary network.rank=4,8`: each arm's time to its first step (report.json's
  first_step_s, from the arm's start); with warm starts the second arm's trainer imported its libraries while the
  first trained.

Needs `loraforge setup simpletuner`. Events are timed as they arrive on stdout (`--json`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
LORAFORGE = [sys.executable, "-m", "orchestrator.cli"]


def tiny_model() -> Path:
    from orchestrator.envs import load_registry
    from orchestrator.tiny import tiny_sdxl

    env = load_registry().get("simpletuner")
    if env is None:
        sys.exit("SimpleTuner is not set up: run `loraforge setup simpletuner`")
    return tiny_sdxl(env.python)


def photos(folder: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from photos import sample_photos

    return sample_photos(folder, ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry"))


def one_shot(model: Path, source: Path, out: Path, warm: bool) -> tuple[float, float]:
    """(setup phase -> first step, command start -> first step) in seconds."""
    env = {**os.environ, "LORAFORGE_WARM": "1" if warm else "0"}
    argv = [
        *LORAFORGE, "train", str(source), "--backend", "simpletuner", "--base-model", str(model),
        "--trigger", "ohwx", "--subject", "object", "--captioner", "template", "--resolution", "256",
        "--steps", "2", "--output-dir", str(out), "--json",
        "--set", "training.precision=fp32", "--set", "training.gradient_checkpointing=false",
    ]  # fmt: skip
    start = time.perf_counter()
    setup = first = None
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO) as child:
        assert child.stdout is not None
        for line in child.stdout:
            event = json.loads(line) if line.startswith("{") else {}
            now = time.perf_counter()
            if event.get("event") == "phase" and event.get("name") == "setup" and setup is None:
                setup = now
            if event.get("event") == "progress" and first is None:
                first = now
    if child.returncode != 0 or setup is None or first is None:
        sys.exit(f"the one-shot run failed (exit {child.returncode})")
    return first - setup, first - start


def compare(model: Path, data: Path, out: Path, warm: bool) -> list[float]:
    job = {
        "name": "firststep",
        "base_model": str(model),
        "dataset": str(data),
        "trigger": "ohwx",
        "add_trigger": True,
        "network": {"rank": 4},
        "training": {"steps": 2, "resolution": 128, "precision": "fp32", "gradient_checkpointing": False},
        "output": {"dir": str(out / "runs")},
    }
    out.mkdir(parents=True)
    (out / "job.yaml").write_text(yaml.safe_dump(job))
    env = {**os.environ, "LORAFORGE_WARM": "1" if warm else "0"}
    argv = [*LORAFORGE, "compare", str(out / "job.yaml"), "--backend", "simpletuner",
            "--vary", "network.rank=4,8", "-o", str(out / "report"), "--json"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"compare failed (exit {result.returncode}): {result.stderr[-2000:]}")
    report = json.loads((out / "report" / "report.json").read_text())
    return [arm["first_step_s"] for arm in report["arms"]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--only", choices=["oneshot", "compare"])
    args = parser.parse_args()
    model = tiny_model()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = photos(root / "photos")
        if args.only in (None, "oneshot"):
            times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for i in range(args.runs):  # alternating, so drift on a shared machine hits both
                for warm in (False, True):
                    times[warm].append(one_shot(model, source, root / f"oneshot-{i}-{warm}", warm))
            for warm in (False, True):
                launch = statistics.median(t[0] for t in times[warm])
                whole = statistics.median(t[1] for t in times[warm])
                label = "warm" if warm else "cold (the backend's own start)"
                print(f"one-shot {label}: setup -> first step {launch:.1f} s; command -> first step {whole:.1f} s")
            ratio = statistics.median(t[0] for t in times[True]) / statistics.median(t[0] for t in times[False])
            print(f"one-shot first step, warm / cold: {ratio:.2f}")
        if args.only in (None, "compare"):
            from orchestrator.tiny.dataset import make_dataset

            data = make_dataset(root / "data", count=4, size=128)
            for warm in (False, True):
                arms = compare(model, data, root / f"compare-{warm}", warm)
                label = "warm" if warm else "cold"
                print(f"compare {label}: first step per arm {', '.join(f'{s:.1f} s' for s in arms)}; "
                      f"second / first {arms[1] / arms[0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
