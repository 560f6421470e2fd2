"""Run a backend as a child process without losing a byte or leaving a process behind.

- The child gets its own process group (accelerate spawns the real trainer as a grandchild; signals go to both).
- stdout and stderr are drained by two threads, so the child never blocks on a full pipe; their raw bytes are
  teed to ``logs/stdout.log`` and ``logs/stderr.log`` before anything else looks at them.
- The caller's ``on_output(stream, data)`` runs on the calling thread, in arrival order.
- Ctrl-C or SIGTERM (or :meth:`Child.stop`) forwards SIGINT to the group, waits, then SIGTERM, then SIGKILL.
- A log that can no longer be written (disk full, I/O error, a read-only remount) never stops the draining: the
  thread stops writing that log and keeps reading the pipe, the trainer is stopped the same way (with a shorter
  grace: it cannot save anything either), and the result says which file failed and why. A disk that stays
  completely full is noticed even before a log write fails (a quiet trainer may not write for minutes, and the
  last block of a log absorbs a few KiB): the same stop, the same result.
- The child's exit status decides ours: a signal death is reported as 128 + signal number.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 64 * 1024
# Grace before each escalation when the trainer is stopped because its log cannot be written: it cannot write a
# checkpoint either, and loraforge must be back within 30 s even if the trainer ignores SIGINT and SIGTERM.
LOG_FAILURE_GRACE_S = 5.0
# The logs' disk is checked this often; with no free block for DISK_FULL_FOR_S in a row (not a moment's spike of
# someone else's temp file), the disk is full: nothing the trainer saves from now on can be written.
DISK_CHECK_S = 1.0
DISK_FULL_FOR_S = 2.0


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    interrupted: bool  # stopped by the user (Ctrl-C, SIGTERM, Child.stop)
    seconds: float
    pid: int
    log_error: OSError | None = None  # writing logs/stdout.log or stderr.log failed: the trainer was stopped


OutputHandler = Callable[[str, bytes], None]


def _child_setup() -> None:
    """In the child before exec: SIGUSR1 is the cluster agent's preemption warning (Slurm delivers it to every
    process of the job step), never the trainer's; ignored dispositions survive exec, so the trainer is stopped
    by the agent's orderly Ctrl-C instead of dying of the signal. And it dies with us (below)."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


# Linux: the child gets SIGTERM when we die, however we die (SIGKILL; a Ray job supervisor killing only our
# process group). It runs in its own session, so nothing else reaches it: it would keep its GPU, and a retried
# Ray job would train beside it in the same run folder. SIGTERM, not SIGKILL: accelerate's launcher then stops
# the ranks it started. The flag survives exec; looked up here, in the parent, not after fork. Linux ties it to the
# *thread* that forked: run_process starts the child and waits for it in one thread, so that thread outlives it.
_PR_SET_PDEATHSIG = 1
_prctl = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        _prctl = ctypes.CDLL(None, use_errno=True).prctl


def start_process(
    argv: Sequence[str], *, env: dict[str, str] | None, cwd: Path | None, stdin: int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """The child as every run starts it: its own session, both outputs piped, SIGUSR1 ignored, dying with us."""
    return subprocess.Popen(
        list(argv),
        cwd=str(cwd) if cwd else None,
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_child_setup,
    )


class Child:
    """A started child process; :meth:`wait` pumps its output to the handler until it exits."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None,
        cwd: Path | None,
        log_dir: Path,
        grace_s: float = 15.0,
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        """Start ``argv``; or, with ``process``, adopt one started earlier by :func:`start_process` (a warm start:
        see orchestrator/warm.py), which has written nothing yet."""
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self.grace_s = grace_s
        self.interrupted = False
        self._lock = threading.Lock()
        self.log_error: OSError | None = None  # the first failed log write (the first file to fail)
        self._stop_requested = threading.Event()
        self._queue: queue.Queue[tuple[str, bytes | None]] = queue.Queue()
        self._start = time.monotonic()
        self.process = process if process is not None else start_process(argv, env=env, cwd=cwd)
        self.pid = self.process.pid
        self._readers = [
            threading.Thread(
                target=self._drain, args=("stdout", self.process.stdout, log_dir / "stdout.log"), daemon=True
            ),
            threading.Thread(
                target=self._drain, args=("stderr", self.process.stderr, log_dir / "stderr.log"), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()

    def _drain(self, stream: str, pipe, log_path: Path) -> None:  # type: ignore[no-untyped-def]
        """Read the pipe to its end, whatever happens to the log: a child blocked on a full pipe never exits."""
        fd = pipe.fileno()
        log = self._open_log(log_path)
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                break
            if not data:
                break
            if log is not None:
                try:
                    log.write(data)
                    log.flush()
                except OSError as exc:
                    self._log_failed(exc, log_path)
                    self._close_quietly(log)
                    log = None
            self._queue.put((stream, data))
        self._close_quietly(log)
        pipe.close()
        self._queue.put((stream, None))

    def _open_log(self, log_path: Path) -> BinaryIO | None:
        try:
            return log_path.open("ab")
        except OSError as exc:
            self._log_failed(exc, log_path)
            return None

    @staticmethod
    def _close_quietly(log: BinaryIO | None) -> None:
        """Close a log whose buffered bytes may not fit on the disk any more (they are dropped, not retried)."""
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()

    def _log_failed(self, exc: OSError, log_path: Path) -> None:
        """A log write failed: remember the first failure (naming the file) and stop the child."""
        if exc.filename is None:
            exc = type(exc)(exc.errno, exc.strerror, str(log_path))
        with self._lock:
            if self.log_error is None:
                self.log_error = exc
        self._stop_requested.set()

    def stop(self) -> None:
        """Ask the child to stop (thread-safe): SIGINT now, escalating if it does not exit."""
        self.interrupted = True
        self._stop_requested.set()

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def wait(self, on_output: OutputHandler | None = None) -> ProcessResult:
        try:
            self._pump(on_output)
        except BaseException:  # a handler failed: the child must not train on with nobody reading its output
            self._signal_group(signal.SIGKILL)
            self.process.wait()
            raise
        returncode = self.process.wait()
        # Nothing the child started may outlive it (a grandchild holding the pipes, a stray dataloader worker).
        self._signal_group(signal.SIGKILL)
        for reader in self._readers:
            reader.join(timeout=2)
        self._flush_queue(on_output)
        if returncode < 0:
            returncode = 128 - returncode
        seconds = time.monotonic() - self._start
        return ProcessResult(returncode, self.interrupted, seconds, self.pid, log_error=self.log_error)

    def _pump(self, on_output: OutputHandler | None) -> None:
        """Hand the output to ``on_output`` until both pipes close and the child exits; stop it when asked."""
        open_streams = 2
        escalation: list[tuple[float, int]] = []
        sent_stop = False
        disk = _DiskWatch(self.log_dir)
        while True:
            if not sent_stop and disk.full_for(DISK_FULL_FOR_S):
                self._log_failed(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.log_dir)), self.log_dir)
            if self._stop_requested.is_set() and not sent_stop:
                sent_stop = True
                now = time.monotonic()
                grace = self.grace_s if self.log_error is None else min(self.grace_s, LOG_FAILURE_GRACE_S)
                self._signal_group(signal.SIGINT)
                escalation = [(now + grace, signal.SIGTERM), (now + 2 * grace, signal.SIGKILL)]
            if escalation and self.process.poll() is None and time.monotonic() >= escalation[0][0]:
                self._signal_group(escalation.pop(0)[1])
            try:
                stream, data = self._queue.get(timeout=0.1)
            except queue.Empty:  # both pipes closed: wait for the exit here, where a stop request still escalates
                if (open_streams == 0 and self.process.poll() is not None) or self._orphaned_pipes():
                    break
                continue
            if data is None:
                open_streams -= 1
                if open_streams == 0 and self.process.poll() is not None:
                    break
                continue
            if on_output is not None:
                on_output(stream, data)

    def _orphaned_pipes(self) -> bool:
        """The child exited but something it started still holds the pipes open: give it a moment, then stop."""
        if self.process.poll() is None:
            return False
        if not hasattr(self, "_exited_at"):
            self._exited_at = time.monotonic()
        return time.monotonic() - self._exited_at > 5.0

    def _flush_queue(self, on_output: OutputHandler | None) -> None:
        while True:
            try:
                stream, data = self._queue.get_nowait()
            except queue.Empty:
                return
            if data and on_output is not None:
                on_output(stream, data)


class _DiskWatch:
    """Whether the disk under ``folder`` has had no free block for a while (checked every DISK_CHECK_S)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.next_check = 0.0
        self.full_since: float | None = None

    def full_for(self, seconds: float) -> bool:
        now = time.monotonic()
        if now >= self.next_check:
            self.next_check = now + DISK_CHECK_S
            self.full_since = (self.full_since or now) if _no_free_block(self.folder) else None
        return self.full_since is not None and now - self.full_since >= seconds


def _no_free_block(folder: Path) -> bool:
    try:
        fs = os.statvfs(folder)
    except OSError:
        return False
    free = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail  # root may write into the blocks reserved for it
    return fs.f_blocks > 0 and free == 0


class forward_signals:
    """Context manager: while active, SIGINT/SIGTERM to us stop the child (gracefully) instead of killing us."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self._previous: dict[int, object] = {}

    def __enter__(self) -> forward_signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.child.interrupted:
            self.child._signal_group(signal.SIGTERM)  # a second Ctrl-C: do not wait for the grace period
        self.child.stop()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def run_process(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log_dir: Path,
    on_output: OutputHandler | None = None,
    grace_s: float = 15.0,
    on_start: Callable[[Child], None] | None = None,
    process: subprocess.Popen[bytes] | None = None,
) -> ProcessResult:
    """Start ``argv`` (or adopt ``process``, a warm start already running it), pump its output to ``on_output`` and
    return when it (and everything it started) is gone."""
    child = Child(argv, env=env, cwd=cwd, log_dir=log_dir, grace_s=grace_s, process=process)
    if on_start is not None:
        on_start(child)
    with forward_signals(child):
        return child.wait(on_output)
