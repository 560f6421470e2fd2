"""How fast both log parsers read a trainer's output, and (with --against) the same figures for an older commit,
measured side by side in the same run.

    .venv/bin/python benchmarks/bench_parsers.py [--against REF] [--mb 50] [--rounds 2] [--reps 2] [--only NAME]

Inputs, each fed to a fresh parser in 64 KiB chunks (as orchestrator.launch reads a pipe), then ``finish(rc)``; the
events of each feed are counted and dropped, as the run's event sink writes each and keeps none:
- synthetic, bar-only: the training bar as each trainer draws it, ~``--mb`` MB (kohya: each step twice on stderr,
  ``\\r`` between draws; SimpleTuner: each step three times with ``\\x1b[A``, as 4.10.1 draws it);
- synthetic, mixed (SimpleTuner's old benchmark input): those bars plus an INFO line in ANSI colours on stdout per
  step;
- every real fixture log the conformance suite reads (../shared/fixtures/logs/<backend>, tests/fixtures/<backend>,
  tests/fixtures/ddp/<backend>-*), each stream repeated until the log is ~``--mb`` MB; stdout first, then stderr.

MB/s = MiB fed / time, for CPU time (``time.process_time``: the least noisy figure on a shared machine) and wall
time, best of rounds x reps. Each measurement runs in a fresh interpreter whose ``sys.path`` starts with the tree
under test: this checkout, and with ``--against`` a ``git archive`` of REF's orchestrator/ and backends/. The trees
alternate per input, so drift on a busy machine hits both. The events of both trees are compared (a digest of
their reprs): a faster parser must give the same events, bit for bit. Exit status 1 if they differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LORAFORGE_SHARED", REPO.parent / "shared"))
CHUNK = 64 * 1024
MB = 1024 * 1024

# One input: its streams' bytes in the order they are fed, and the exit status finish() gets.
Streams = list[tuple[str, bytes]]


# --- inputs ------------------------------------------------------------------------------------------------------


def _kohya_bars(mb: float) -> Streams:
    # as sd-scripts draws it: each step twice (the new count with the previous average, then the step's own)
    block = "".join(
        f"steps:  {i % 100}%|███▌      | {i}/100000 [00:{i % 60:02d}<00:10,  1.23it/s, avr_loss={0.1 + j * 1e-6:.4f}]\r"
        for i in range(1, 1001)
        for j in (i - 1, i)
    ).encode()
    return [("stderr", _repeat(block, mb))]


def _simpletuner_draws() -> bytes:
    bar = (
        "\x1b[AEpoch 1/2, Steps:  {p}%|###       | {n}/100000 [00:{c:02d}<00:10,  1.23it/s, lr=0.0001, "
        "step_loss={loss:.3g}]\r"
    )
    return "".join(
        bar.format(p=i % 100, n=i, c=i % 60, loss=loss)
        for i in range(1, 1001)
        for loss in (0.1 + (i - 1) * 1e-4, 0.1 + i * 1e-4, 0.1 + i * 1e-4)
    ).encode()


def _simpletuner_bars(mb: float) -> Streams:
    return [("stderr", _repeat(_simpletuner_draws(), mb))]


def _simpletuner_mixed(mb: float) -> Streams:
    """bench_simpletuner_overhead.py's input: bars on stderr, an INFO line per step on stdout, in turns."""
    stderr = _simpletuner_draws()
    stdout = b"\x1b[0m[RANK 0] 2026-11-28 17:10:03,360 [INFO] a line of SimpleTuner's own logging\x1b[0m\n" * 1000
    copies = max(1, int(mb * MB) // (len(stderr) + len(stdout)))
    return [pair for _ in range(copies) for pair in (("stderr", stderr), ("stdout", stdout))]


def _repeat(block: bytes, mb: float) -> bytes:
    return block * max(1, int(mb * MB) // len(block))


def real_logs(backend: str) -> dict[str, tuple[Path | None, Path, int]]:
    """label -> (stdout file or None, stderr or combined file, the run's exit status): every fixture log of a
    backend, found by name (a run is split into NAME.stdout / NAME.stderr, or stdout.log / stderr.log in a folder)."""
    found: dict[str, tuple[Path | None, Path, int]] = {}
    shared = SHARED / "fixtures" / "logs" / backend
    for path in sorted(shared.glob("*.log")):
        found[path.name] = (None, path, 1 if path.name.startswith(("fail", "run0")) else 0)
    for err in sorted(shared.glob("*.stderr")):
        found[err.name.replace(".stderr", " split")] = (err.with_suffix(".stdout"), err, 0)
    local = REPO / "tests" / "fixtures"
    for err in sorted([*(local / backend).rglob("*stderr.log"), *(local / "ddp").glob(f"{backend}-*/stderr.log")]):
        out = err.with_name(err.name.replace("stderr", "stdout"))
        label = str(err.relative_to(local).parent) + ("/fail" if err.name.startswith("fail") else "")
        failed = "fail" in label or "mismatch" in label
        found[label] = (out if out.exists() else None, err, 1 if failed else 0)
    return found


def _replicated(stdout: Path | None, stderr: Path, mb: float) -> Streams:
    files = [("stdout", stdout.read_bytes())] if stdout else []
    files.append(("stderr", stderr.read_bytes()))
    copies = max(1, int(mb * MB) // sum(len(data) for _, data in files))
    return [(stream, data * copies) for stream, data in files]


def build_input(backend: str, name: str, mb: float) -> tuple[Streams, int]:
    if name == "synthetic bars":
        return (_kohya_bars(mb) if backend == "kohya" else _simpletuner_bars(mb)), 0
    if name == "synthetic mixed":
        return _simpletuner_mixed(mb), 0
    stdout, stderr, returncode = real_logs(backend)[name]
    return _replicated(stdout, stderr, mb), returncode


def inputs(backend: str) -> list[str]:
    synthetic = ["synthetic bars"] + (["synthetic mixed"] if backend == "simpletuner" else [])
    return synthetic + list(real_logs(backend))


# --- one measurement, in a fresh interpreter ---------------------------------------------------------------------


def worker(tree: str, backend: str, name: str, mb: float, reps: int) -> dict[str, object]:
    sys.path.insert(0, tree)
    from backends import base

    streams, returncode = build_input(backend, name, mb)
    chunks = [(stream, data[i : i + CHUNK]) for stream, data in streams for i in range(0, len(data), CHUNK)]
    size = sum(len(data) for _, data in streams) / MB
    # the events, for the comparison of trees: one untimed parse
    parser = base.get(backend).parser()
    events: list[object] = []
    for stream, data in chunks:
        events += parser.feed(data, stream)
    events += parser.finish(returncode)
    digest = hashlib.sha256("\n".join(map(repr, events)).encode()).hexdigest()[:16]
    count = len(events)
    del events, parser
    # timed parses: each feed's events are dropped once counted, as the run's event sink writes each and keeps none
    # (keeping millions of events would time the allocator, not the parser)
    cpu, wall = [], []
    for _ in range(reps):
        parser = base.get(backend).parser()
        seen = 0
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        for stream, data in chunks:
            seen += len(parser.feed(data, stream))
        seen += len(parser.finish(returncode))
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
        assert seen == count, (seen, count)
    return {"mb": size, "cpu": cpu, "wall": wall, "digest": digest, "events": count}


def measure(tree: Path, backend: str, name: str, mb: float, reps: int) -> dict[str, object]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            str(tree),
            "--backend",
            backend,
            "--input",
            name,
            "--mb",
            str(mb),
            "--reps",
            str(reps),
        ],  # fmt: skip
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def archive(ref: str, into: Path) -> Path:
    """REF's orchestrator/ and backends/ (what a parser imports), unpacked into ``into``."""
    data = subprocess.run(
        ["git", "archive", "--format=tar", ref, "orchestrator", "backends"], check=True, capture_output=True, cwd=REPO
    ).stdout
    tar_path = into / "tree.tar"
    tar_path.write_bytes(data)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", metavar="REF", help="also measure this commit (e.g. the one before a change)")
    parser.add_argument("--mb", type=float, default=50.0, help="size of each input (default 50)")
    parser.add_argument("--rounds", type=int, default=2, help="fresh interpreters per tree and input (default 2)")
    parser.add_argument("--reps", type=int, default=2, help="parses per interpreter (default 2)")
    parser.add_argument("--only", choices=["kohya", "simpletuner"], help="one backend")
    parser.add_argument("--inputs", nargs="*", help="only these inputs (names as printed)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.backend, args.input, args.mb, args.reps)))
        return 0

    with tempfile.TemporaryDirectory(prefix="lf-bench-parsers-") as tmp:
        trees = {"now": REPO}
        if args.against:
            trees = {args.against: archive(args.against, Path(tmp)), "now": REPO}
        same = True
        head = f"{'backend':<12} {'input':<40} {'MiB':>5} " + " ".join(
            f"{label[:10] + ' cpu':>15} {'wall':>6}" for label in trees
        )
        print(f"MB/s (MiB per second), best of {args.rounds} x {args.reps}\n{head}", flush=True)
        for backend in [args.only] if args.only else ["kohya", "simpletuner"]:
            for name in inputs(backend):
                if args.inputs and name not in args.inputs:
                    continue
                results: dict[str, list[dict[str, object]]] = {label: [] for label in trees}
                for _ in range(args.rounds):
                    for label, tree in trees.items():
                        results[label].append(measure(tree, backend, name, args.mb, args.reps))
                cells, digests = [], set()
                for label in trees:
                    runs = results[label]
                    size = float(runs[0]["mb"])  # type: ignore[arg-type]
                    cpu = min(t for r in runs for t in r["cpu"])  # type: ignore[attr-defined]
                    wall = min(t for r in runs for t in r["wall"])  # type: ignore[attr-defined]
                    cells.append(f"{size / cpu:>15.1f} {size / wall:>6.1f}")
                    digests.add((runs[0]["digest"], runs[0]["events"]))
                flag = "" if len(digests) == 1 else "  EVENTS DIFFER"
                same = same and not flag
                print(f"{backend:<12} {name:<40} {size:>5.0f} {' '.join(cells)}{flag}", flush=True)
    if args.against:
        print("events: the same for both trees on every input" if same else "events DIFFER (see above)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
