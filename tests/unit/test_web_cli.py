"""`loraforge serve` as a command: listed in --help, and nothing of the web app is imported until it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = (
    "import sys\n"
    "from orchestrator.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    "print(sorted(m for m in sys.modules if m.startswith('orchestrator.web') or m in ('sqlite3', 'http.server')))\n"
)


def loaded(*argv: str) -> tuple[str, str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=REPO, timeout=60)
    lines = done.stdout.strip().splitlines()
    return "\n".join(lines[:-1]), lines[-1]


def test_help_lists_serve_and_imports_nothing_of_it() -> None:
    text, modules = loaded("--help")
    assert "serve" in text and "a local web app" in text
    assert modules == "[]"
    text, modules = loaded("serve", "--help")
    assert "--token" in text and "--runs" in text and "--gpus" in text
    assert modules == "[]"


def test_any_other_address_gets_a_generated_token(tmp_path: Path) -> None:
    import re
    import signal
    import urllib.error
    import urllib.request

    from web_helpers import ServeProcess, free_port, wait_for

    server = ServeProcess(tmp_path / "runs", free_port(), "--host", "0.0.0.0", "--gpus", "none")
    url = server.start()
    try:
        found = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\?token=([\w-]{20,})", url)
        assert found, url
        wait_for(lambda: any("token was generated" in line for line in server.output), timeout=10, what="the note")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{found.group(1)}/api/runs", timeout=10)
            raise AssertionError("answered without the token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        request = urllib.request.Request(f"http://127.0.0.1:{found.group(1)}/api/runs")
        request.add_header("Authorization", f"Bearer {found.group(2)}")
        assert urllib.request.urlopen(request, timeout=10).status == 200
        # a second server on the same port: one line saying what to do, no traceback
        busy = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "serve", "--runs", str(tmp_path / "runs"), "--port",
             found.group(1), "--host", "0.0.0.0"],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
        assert busy.returncode == 2 and "cannot listen on 0.0.0.0" in busy.stdout + busy.stderr  # bad input
        assert "Traceback" not in busy.stdout + busy.stderr
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
    assert server.process.returncode == 0
