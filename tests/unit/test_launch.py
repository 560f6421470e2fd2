"""launch: every byte captured and teed, exit status kept, signals reach the whole process group."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
from pathlib import Path

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
