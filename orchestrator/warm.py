"""Warm starts: the trainer's interpreter started ahead of its run, so its slow imports overlap loraforge's own work.

A cold start of SimpleTuner spends nearly all of its time to the first step importing torch, diffusers and its
trainer (11 s), then torch's inductor on its first step (4.5 s): 15.5 of 16.5 s for the tiny SDXL on 2 CPU cores.
A warm interpreter imports both, with the collector off, in about 9 s. A one-shot run starts it before it prepares
and captions the photos; a comparison starts the next arm's while the current one trains. When the run's command
is known it is handed over (orchestrator/warm_launcher.py runs it as ``python -m MODULE ARGS`` would) and the run
adopts the process as if it had just started it: same session, pipes, signals and logs.

Every run still gets an interpreter of its own: nothing is forked from a process that has touched a GPU, so this
is as safe with CUDA as a cold start (importing torch does not initialise CUDA; the run's CUDA_VISIBLE_DEVICES is
set before any code of the trainer runs). ``LORAFORGE_WARM=0`` turns warm starts off.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

from backends.base import Launch, Warm
from orchestrator.envs import BackendEnv, cache_dir
from orchestrator.launch import start_process

LAUNCHER = Path(__file__).resolve().with_name("warm_launcher.py")


class WarmStart:
    """An interpreter importing a trainer's modules, waiting for its run. Hand it the run with :meth:`release`, or
    let it go with :meth:`discard`; it exits by itself when loraforge does (its stdin closes)."""

    def __init__(self, python: Path, module: str, process: subprocess.Popen[bytes]) -> None:
        self.python = python
        self.module = module
        self.process = process
        self.released = False

    def release(self, launch: Launch, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
        """Run ``launch`` (its whole environment ``env``) in the warm interpreter and return the process, or None
        when the launch is not ``python -m MODULE ...`` of this interpreter (a multi-process run): start it cold."""
        argv = launch.argv
        if argv[:3] != [str(self.python), "-m", self.module] or self.process.poll() is not None:
            self.discard()
            return None
        order = {"args": argv[3:], "env": env, "cwd": str(launch.cwd)}
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(order).encode() + b"\n")
            self.process.stdin.close()
        except OSError:  # it died while warming (out of memory...): start cold
            self.discard()
            return None
        self.released = True  # the run owns the process now
        return self.process

    def discard(self) -> None:
        """Let the interpreter go (no run for it); nothing once it was released to a run. It is stopped at once: it
        has only imported, written nothing of the user's, and an error before the run (a typo in the job) must not
        wait for a trainer's imports to finish (16 s for SimpleTuner)."""
        if self.released:
            return
        self.released = True
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()  # an empty order: a launcher done importing exits quietly
        try:
            self.process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, 9)
            self.process.wait()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def start_warm(warm: Warm | None, env: BackendEnv) -> WarmStart | None:
    """Start ``env``'s interpreter importing ``warm``'s slow part, or None where there is nothing to warm (or warm
    starts are off, or the interpreter cannot start)."""
    if warm is None or os.environ.get("LORAFORGE_WARM", "1") == "0":
        return None
    argv = [str(env.python), "-u", str(LAUNCHER), warm.module, *warm.imports]
    if warm.later:
        argv += ["--later", *warm.later]
    # a folder of ours to import in: a trainer may write files where it is imported (SimpleTuner's debug.log), and
    # the user's current folder is not ours; the run itself moves to its own folder when it starts
    scratch = cache_dir() / "warm"
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        process = start_process(argv, env={**os.environ, **warm.settings}, cwd=scratch, stdin=subprocess.PIPE)
    except OSError:
        return None
    return WarmStart(env.python, warm.module, process)


def warm_for(backend_name: str) -> WarmStart | None:
    """A warm start of ``backend_name``'s registered environment, or None (not set up, nothing to warm). Imports
    only the backend's warm module: called first thing, so the trainer's imports overlap all of loraforge's."""
    from backends.base import warm_spec
    from orchestrator.envs import load_registry, resolve_runtime

    env = load_registry().get(backend_name)
    if env is None or not env.python.exists():
        return None
    runtime = resolve_runtime(env)
    return start_warm(warm_spec(backend_name, runtime), runtime)
