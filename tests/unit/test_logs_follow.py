"""`loraforge logs -f RUN_FOLDER` follows a local run (the CLI's, or a job of serve's queue) to its end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def test_a_run_folder_is_followed_until_it_ends(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": "running"}))
    (run / "events.jsonl").write_text('{"event": "phase", "name": "setup"}\n{"torn line\n')
    follower = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "logs", "-f", str(run)], stdout=subprocess.PIPE, text=True
    )
    time.sleep(1.5)
    assert follower.poll() is None  # still following a running run
    with (run / "events.jsonl").open("a") as f:
        f.write('{"event": "progress", "step": 1}\n')
    (run / "run.json").write_text(json.dumps({"status": "finished"}))
    out, _ = follower.communicate(timeout=30)
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["phase", "progress"]  # the torn line skipped, nothing twice
    assert follower.returncode == 0
