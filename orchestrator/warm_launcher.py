"""A trainer's interpreter started ahead of its run: import the slow part now, run the trainer when told.

    python -u warm_launcher.py MODULE IMPORT [IMPORT ...] [--later LATER ...]

Run by loraforge with the backend's own interpreter (never imported by the orchestrator). It imports each IMPORT
(torch, diffusers, the trainer's modules: the slow part of a start), then each LATER that exists (what the run
would import on its first step), while loraforge still prepares photos, captions and renders, writing nothing
meanwhile. Then it reads one JSON line from stdin, ``{"args": [...], "env": {...}, "cwd": "..."}``, and runs
``python -m MODULE ARGS`` in this interpreter, exactly as a fresh one would (``sys.argv``, ``sys.path[0]``, the
working directory and the whole environment replaced by the run's). An empty stdin (loraforge ended without a run)
exits quietly. A failed IMPORT is not hidden: it is raised again, on the run's output, when the run starts; a failed
LATER is left for the run to meet (or not) as a cold start would.

The garbage collector is off while importing: the imports create about a million objects that live as long as the
run, and collecting as they come cost a fifth of SimpleTuner's import time (10.8 -> 8.8 s of CPU on 2 cores). Those
objects are then frozen (``gc.freeze``), so the run's own collections do not walk them again, and collection is on
again before the run, as in a fresh interpreter.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import runpy
import sys


def _import(imports: list[str], later: list[str]) -> BaseException | None:
    """Import ``imports``, then whichever of ``later`` import cleanly; the failure of an import, if any."""
    try:
        for name in imports:
            importlib.import_module(name)
    except BaseException as exc:  # noqa: BLE001 - shown when the run starts, as a cold start would show it
        return exc
    for name in later:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - not in this version: the run imports what it needs itself
            continue
    return None


def main() -> int:
    module, rest = sys.argv[1], sys.argv[2:]
    cut = rest.index("--later") if "--later" in rest else len(rest)
    imports, later = rest[:cut], rest[cut + 1 :]
    del sys.path[0]  # this file's folder (loraforge's modules) must not shadow anything the trainer imports
    saved = os.dup(1), os.dup(2)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # nothing before the run: its output belongs to the run's log
    os.dup2(quiet, 2)
    gc.disable()
    try:
        failure = _import(imports, later)
    finally:
        gc.freeze()
        gc.enable()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(quiet)
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    order = json.loads(line)
    os.chdir(order["cwd"])
    os.environ.clear()
    os.environ.update(order["env"])
    if failure is not None:
        raise failure
    sys.argv = [module, *order["args"]]
    sys.path.insert(0, os.getcwd())  # as `python -m` has it
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
