"""`loraforge compare JOB.yaml --backends kohya,simpletuner [--vary FIELD=V1,V2] [-o OUTDIR] [--json]`.

Trains every arm (backend x varied value) on the same dataset, one after the other or one per GPU, and writes
OUTDIR/report.html (one self-contained file), OUTDIR/report.json and a summary table in the terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from orchestrator.jobargs import add_job_arguments, job_layers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)
    parser.add_argument(
        "--backends", help="comma-separated backends to compare (default: all; with --vary: --backend or kohya)"
    )
    parser.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="FIELD=V1,V2",
        help="compare values of any job setting, e.g. --vary network.rank=8,16 (repeatable: every combination)",
    )
    parser.add_argument(
        "--from-job", metavar="ID", help="train nothing: report on the runs of a sweep (`loraforge submit --sweep`)"
    )
    parser.add_argument("-o", "--out", help="folder for the report and the arms' run folders")
    parser.add_argument("--json", action="store_true", help="print report.json to stdout at the end")
    parser.add_argument("--no-samples", action="store_true", help="skip sample images")
    parser.add_argument("--dry-run", action="store_true", help="show the arms and the settings mapping; train nothing")
    parser.add_argument(
        "--from-runs", nargs="+", metavar="RUN_DIR", help="train nothing: report on existing run folders"
    )


def run(args: argparse.Namespace) -> int:
    from backends.base import names
    from orchestrator.compare.arms import expand_arms, parse_backends
    from orchestrator.compare.equivalence import check_equivalence
    from orchestrator.compare.report import build_report
    from orchestrator.compare.runner import lock_handler, run_arms, write_arms_file
    from orchestrator.compare.terminal import print_equivalence, print_summary
    from orchestrator.display import console
    from orchestrator.errors import LoraforgeError
    from orchestrator.job import merge_layers

    con = console()
    if args.from_job:
        args.from_runs = sweep_runs(args.from_job)
    if args.from_runs:
        return _report_runs(args, con)
    if args.backends:
        backends = parse_backends(args.backends)
    elif args.vary:
        backends = [args.backend or "kohya"]
    else:
        backends = [args.backend] if args.backend else names()
    if len(backends) < 2 and not args.vary:
        raise LoraforgeError(
            "nothing to compare: one backend and no --vary",
            "give --backends kohya,simpletuner, or --vary FIELD=V1,V2 (e.g. --vary network.rank=8,16)",
        )
    layers, job_file = job_layers(args)
    data = merge_layers(*(layer for _, layer in layers))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or Path("runs") / f"compare-{data.get('name', 'job')}-{stamp}").resolve()
    data = merge_layers(data, {"output": {"dir": str(out / "runs")}})
    arms = expand_arms(data, backends, args.vary, job_file or "command-line flags")

    con.print(f"{len(arms)} arms: " + ", ".join(arm.label for arm in arms))
    equivalence = check_equivalence(arms[0].job, backends)
    print_equivalence(equivalence, con)
    if args.dry_run:
        return 0

    out.mkdir(parents=True, exist_ok=True)
    (out / "equivalence.json").write_text(json.dumps(equivalence.to_json(), indent=2, default=str), encoding="utf-8")
    handler = lock_handler(_ArmPrinter(con).handle)
    results = run_arms(
        arms,
        on_event=handler,
        on_arm_done=lambda r: con.print(_done_line(r), markup=False),
        samples=not args.no_samples,
    )
    write_arms_file(results, out)
    report = build_report(results, out, equivalence=equivalence, title=f"loraforge compare: {data.get('name')}")
    print_summary(report, con)
    if args.json:
        sys.stdout.write(json.dumps(report.data, indent=2, default=str) + "\n")
    return 0 if all(r.status == "finished" for r in results) else 1


def _report_runs(args: argparse.Namespace, con) -> int:  # type: ignore[no-untyped-def]
    from orchestrator.compare.report import build_report
    from orchestrator.compare.terminal import print_summary
    from orchestrator.errors import LoraforgeError

    runs = [Path(p).resolve() for p in args.from_runs]
    for run in runs:
        if not (run / "job.yaml").is_file():
            raise LoraforgeError(f"{run} is not a loraforge run folder (no job.yaml)", "pass folders under runs/")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or Path("runs") / f"compare-{stamp}").resolve()
    report = build_report(runs, out, title="loraforge compare: " + ", ".join(run.name for run in runs))
    print_summary(report, con)
    if args.json:
        sys.stdout.write(json.dumps(report.data, indent=2, default=str) + "\n")
    return 0


def sweep_runs(job_id: str) -> list[str]:
    """The run folders of a sweep's array tasks; tasks that never started are named, not silently dropped."""
    from orchestrator.errors import LoraforgeError
    from orchestrator.executors.base import array_tasks, lookup, run_folder

    tasks = array_tasks(job_id)
    if not tasks:
        raise LoraforgeError(f"job {job_id} is not a sweep", "submit one with `loraforge submit JOB --sweep FILE`")
    runs, missing = [], []
    for task in tasks:
        run = run_folder(Path(lookup(task)["folder"]))
        (runs if run is not None else missing).append(str(run) if run is not None else task)
    if missing:
        print(f"not started yet, left out of the report: {', '.join(missing)}", file=sys.stderr)
    if not runs:
        raise LoraforgeError(f"no task of sweep {job_id} has started", f"wait, and check `loraforge status {job_id}`")
    return runs


def _done_line(result) -> str:  # type: ignore[no-untyped-def]
    text = f"[{result.label}] {result.status}"
    return text + (f": {result.reason}" if result.reason else "")


class _ArmPrinter:
    """One line per phase and per tenth of the run, prefixed with the arm, so side-by-side arms stay readable."""

    def __init__(self, con) -> None:  # type: ignore[no-untyped-def]
        self.con = con
        self.deciles: dict[str, int] = {}

    def handle(self, arm, event) -> None:  # type: ignore[no-untyped-def]
        from orchestrator.events import Checkpoint, Failure, Phase, Progress

        prefix = f"[{arm.label}] "
        if isinstance(event, Phase):
            self.con.print(prefix + f"phase: {event.name}", markup=False)
        elif isinstance(event, Progress) and event.total:
            decile = event.step * 10 // max(event.total, 1)
            if decile != self.deciles.get(arm.label):
                self.deciles[arm.label] = decile
                loss = f" loss {event.loss:.4f}" if event.loss is not None else ""
                self.con.print(prefix + f"step {event.step}/{event.total}{loss}", markup=False)
        elif isinstance(event, Checkpoint):
            self.con.print(prefix + f"checkpoint at step {event.step}", markup=False)
        elif isinstance(event, Failure):
            self.con.print(prefix + f"failed ({event.kind}): {event.message}", markup=False)
