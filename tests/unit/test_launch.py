"""launch: every byte captured and teed, exit status kept, signals reach the whole process group, and a disk that
fails under the logs (full, read-only) stops the trainer instead of hanging."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.launch import Child, run_process


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_both_pipes_drained_and_teed_byte_exact(tmp_path: Path) -> None:
    # 4 MiB to each pipe at once: a runner that reads one pipe at a time would deadlock.
    script = _script(
        tmp_path,
        "noisy.py",
        """
        import os
        block = bytes(range(256)) * 4096
        for _ in range(4):
            os.write(1, block)
            os.write(2, block[::-1] + b"\\r")
        """,
    )
    seen: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
    result = run_process(
        [sys.executable, str(script)], log_dir=tmp_path / "logs", on_output=lambda s, d: seen[s].extend(d)
    )
    assert result.returncode == 0 and not result.interrupted
    assert len(seen["stdout"]) == 4 * 256 * 4096
    assert (tmp_path / "logs" / "stdout.log").read_bytes() == bytes(seen["stdout"])
    assert (tmp_path / "logs" / "stderr.log").read_bytes() == bytes(seen["stderr"])


def test_exit_status_is_the_childs(tmp_path: Path) -> None:
    result = run_process([sys.executable, "-c", "import sys; sys.exit(3)"], log_dir=tmp_path)
    assert result.returncode == 3


def test_signal_death_is_128_plus_signal(tmp_path: Path) -> None:
    result = run_process(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], log_dir=tmp_path
    )
    assert result.returncode == 137


def test_stop_reaches_the_grandchild_and_nothing_is_left(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild-got-sigint"
    pidfile = tmp_path / "grandchild.pid"
    trainer = _script(
        tmp_path,
        "trainer.py",
        f"""
        import os, signal, sys, time
        def stop(*_):
            open({str(marker)!r}, "w").close()
            sys.exit(130)
        signal.signal(signal.SIGINT, stop)
        open({str(pidfile)!r}, "w").write(str(os.getpid()))
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
        """,
    )
    # Like accelerate: a parent that ignores SIGINT itself, spawns the trainer and returns its status.
    parent = _script(
        tmp_path,
        "parent.py",
        f"""
        import signal, subprocess, sys
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, {str(trainer)!r}], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        sys.exit(child.wait())
        """,
    )
    child = Child([sys.executable, str(parent)], env=None, cwd=None, log_dir=tmp_path / "logs", grace_s=20)
    ready = threading.Event()

    def on_output(stream: str, data: bytes) -> None:
        if b"ready" in data:
            child.stop()
            ready.set()

    result = child.wait(on_output)
    assert ready.is_set()
    assert result.interrupted
    assert marker.exists(), "SIGINT did not reach the grandchild"
    assert result.returncode == 130
    grandchild = int(pidfile.read_text())
    assert not Path(f"/proc/{grandchild}").exists() or "zombie" in Path(f"/proc/{grandchild}/status").read_text()


def test_a_child_ignoring_sigint_is_escalated(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        "stubborn.py",
        """
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
        """,
    )
    child = Child([sys.executable, str(script)], env=None, cwd=None, log_dir=tmp_path, grace_s=0.5)
    result = child.wait(lambda s, d: child.stop() if b"ready" in d else None)
    assert result.interrupted
    assert result.returncode == 128 + 15  # SIGTERM after the grace period


def test_env_and_cwd_are_the_launchs(tmp_path: Path) -> None:
    out = bytearray()
    env = dict(os.environ, LORAFORGE_PROBE="yes")
    run_process(
        [sys.executable, "-c", "import os; print(os.environ['LORAFORGE_PROBE'], os.getcwd())"],
        env=env,
        cwd=tmp_path,
        log_dir=tmp_path / "logs",
        on_output=lambda s, d: out.extend(d),
    )
    assert out.decode().split() == ["yes", str(tmp_path)]


def test_the_trainer_ignores_the_preemption_warning_signal(tmp_path: Path) -> None:
    """Slurm sends SIGUSR1 to every process of the job step; only the agent acts on it."""
    seen: list[bytes] = []
    code = "import signal; print(signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN)"
    result = run_process([sys.executable, "-c", code], log_dir=tmp_path, on_output=lambda s, d: seen.append(d))
    assert result.returncode == 0
    assert b"".join(seen).strip() == b"True"


def test_the_trainer_dies_with_the_process_that_launched_it(tmp_path: Path) -> None:
    """The launcher is SIGKILLed (what Ray's job supervisor does to the agent's group when it dies): the trainer,
    in a session of its own, must not train on as an orphan."""
    import signal
    import subprocess
    import time

    launcher = _script(
        tmp_path,
        "launcher.py",
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from pathlib import Path
        from orchestrator.launch import run_process
        code = "import os, time; open({str(tmp_path / "pid")!r}, 'w').write(str(os.getpid())); time.sleep(60)"
        run_process([sys.executable, "-c", code], log_dir=Path({str(tmp_path / "logs")!r}))
        """,
    )
    parent = subprocess.Popen([sys.executable, str(launcher)])
    deadline = time.monotonic() + 30
    while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text():
        assert time.monotonic() < deadline and parent.poll() is None, "the trainer never started"
        time.sleep(0.05)
    trainer = int((tmp_path / "pid").read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{trainer}").exists() and "Z" not in _state(trainer):
        assert time.monotonic() < deadline, "the trainer outlived its launcher"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


# --- a failing disk under the logs ------------------------------------------------------------------------------


@contextmanager
def small_tmpfs(size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (CI runs as root); the test is skipped, with the reason, where none can be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root): run as root to test a full disk")
    folder = Path(tempfile.mkdtemp(prefix="loraforge-tmpfs-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        folder.rmdir()


FLOOD = """
import os, signal, sys
{handlers}
open({pidfile!r}, "w").write(str(os.getpid()))
block = b"x" * 65535 + b"\\n"
while True:
    os.write(2, block)
    os.write(1, block[:1024])
"""


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or _state(pid) == "Z"


@pytest.mark.parametrize(
    "handlers, why",
    [
        ("", "a trainer that stops on SIGINT"),
        (
            "signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)",
            "a trainer that ignores SIGINT and SIGTERM (only SIGKILL stops it)",
        ),
    ],
)
def test_a_full_disk_under_the_logs_stops_the_trainer_and_never_hangs(tmp_path: Path, handlers: str, why: str) -> None:
    """The trainer floods its output into a 1 MiB tmpfs: the log fills, the drain threads keep reading (or the child
    would block on its pipe forever), the trainer is stopped, and we are back well within 30 s with the log kept."""
    pidfile = tmp_path / "pid"
    script = _script(tmp_path, "flood.py", FLOOD.format(handlers=handlers, pidfile=str(pidfile)))
    with small_tmpfs("1m") as disk:
        start = time.monotonic()
        result = run_process([sys.executable, str(script)], log_dir=disk / "logs", grace_s=15)
        elapsed = time.monotonic() - start
        assert elapsed < 30, f"{why}: took {elapsed:.1f} s"
        assert result.log_error is not None and result.log_error.errno == errno.ENOSPC
        assert result.log_error.filename in (str(disk / "logs" / "stderr.log"), str(disk / "logs" / "stdout.log"))
        assert not result.interrupted  # the user did not stop it
        assert _gone(int(pidfile.read_text())), f"{why}: the trainer is still there"
        kept = (disk / "logs" / "stderr.log").read_bytes()
        assert len(kept) > 512 * 1024 and set(kept) == {ord("x"), ord("\n")}  # what fitted is kept, intact


def test_after_a_log_write_fails_the_pipes_are_still_drained_to_the_end(tmp_path: Path) -> None:
    """A trainer that ignores SIGINT and writes 8 MiB more before it exits on its own: had we stopped reading, it
    would block on the full pipe until SIGKILL; instead every byte reaches the handler and it exits 0."""
    script = _script(
        tmp_path,
        "chatty.py",
        """
        import os, signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        block = b"y" * 65536
        for _ in range(3 * 16 + 128):  # 3 MiB fills the 2 MiB disk; 8 MiB more after that
            os.write(2, block)
        """,
    )
    seen = bytearray()
    with small_tmpfs("2m") as disk:
        result = run_process(
            [sys.executable, str(script)], log_dir=disk / "logs", on_output=lambda s, d: seen.extend(d), grace_s=15
        )
    assert result.log_error is not None and result.log_error.errno == errno.ENOSPC
    assert result.returncode == 0, "the trainer should have finished writing, not been killed"
    assert len(seen) == (3 * 16 + 128) * 65536


def test_logs_on_a_read_only_disk_end_the_same_way(tmp_path: Path) -> None:
    """The logs cannot even be opened (the disk went read-only; a running file system refuses a read-only remount
    while files are open for writing, so this is the case we can make for real): the trainer is stopped at once."""
    script = _script(
        tmp_path,
        "steady.py",
        """
        import time
        while True:
            print("step", flush=True)
            time.sleep(0.01)
        """,
    )
    with small_tmpfs("1m") as disk:
        (disk / "logs").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        start = time.monotonic()
        result = run_process([sys.executable, str(script)], log_dir=disk / "logs", grace_s=15)
        assert time.monotonic() - start < 30
        assert result.log_error is not None and result.log_error.errno == errno.EROFS
        assert result.log_error.filename.startswith(str(disk / "logs"))
        assert _gone(result.pid)


def test_a_quiet_trainer_on_a_disk_that_fills_is_stopped_without_a_failed_write(tmp_path: Path) -> None:
    """A trainer that prints a line a minute (its log's last block would take those for a long time): the disk
    stays full, and that alone stops it within seconds."""
    script = _script(
        tmp_path,
        "quiet.py",
        """
        import time
        print("loading", flush=True)
        time.sleep(120)
        """,
    )
    with small_tmpfs("1m") as disk:
        child = Child([sys.executable, str(script)], env=None, cwd=None, log_dir=disk / "logs", grace_s=15)
        filled: list[float] = []

        def fill_once(stream: str, data: bytes) -> None:
            if not filled:
                with (disk / "filler").open("wb", buffering=0) as f:
                    for size in (1 << 16, 1):
                        with contextlib.suppress(OSError):
                            while True:
                                f.write(b"\0" * size)
                filled.append(time.monotonic())

        result = child.wait(fill_once)
        assert time.monotonic() - filled[0] < 15
        assert result.log_error is not None and result.log_error.errno == errno.ENOSPC
        assert result.log_error.filename == str(disk / "logs")
        assert _gone(result.pid) and (disk / "logs" / "stdout.log").read_bytes() == b"loading\n"


def test_a_handler_that_raises_takes_the_child_down_with_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = (
        f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); print('hi', flush=True); time.sleep(60)"
    )

    def broken_handler(stream: str, data: bytes) -> None:
        raise RuntimeError("a display that crashed")

    with pytest.raises(RuntimeError):
        run_process([sys.executable, "-c", code], log_dir=tmp_path / "logs", on_output=broken_handler)
    assert _gone(int(pidfile.read_text()))
