"""Hostile run folders through `loraforge runs`, `runs show`, `resume`, `parse-log` and `compare --from-runs`: a bad
line in events.jsonl (torn, spoofed, the wrong type) is skipped with a warning and every other run still shows; a
bad request is one line; a finished run is never retrained without being asked; a run whose launcher was killed
shows as killed, not as running forever."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_hostile_harness import SECRET, Case, Result, Setup, World, params, run_case

from orchestrator.job import build_job, dump_job
from orchestrator.runs import launcher_identity

GOOD_EVENTS = [
    {"event": "phase", "name": "training"},
    {"event": "progress", "step": 1, "total": 4, "loss": 0.5},
    {"event": "progress", "step": 2, "total": 4, "loss": 0.4},
    {"event": "checkpoint", "path": "output/me-000002.safetensors", "step": 2},
    {"event": "validation", "step": 2, "loss": 0.45},
    {"event": "progress", "step": 4, "total": 4, "loss": 0.3},
    {"event": "checkpoint", "path": "output/me-000004.safetensors", "step": 4},
]


def make_run(
    root: Path,
    name: str,
    *,
    events: list[object] | bytes | None = None,
    state: object | None = None,
    job_text: str | None = None,
) -> Path:
    """A run folder as `loraforge train` leaves it; ``events`` lines may be dicts (JSON) or raw text."""
    path = root / name
    for sub in ("rendered", "logs", "output"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    job = build_job({"name": "me", "base_model": "org/model", "dataset": str(root), "training": {"steps": 4}})
    (path / "job.yaml").write_text(job_text if job_text is not None else dump_job(job), encoding="utf-8")
    if state is None:
        state = {"backend": "kohya", "status": "finished", "step": 4, "lora": str(path / "output" / "me.safetensors")}
    (path / "run.json").write_text(json.dumps(state) if not isinstance(state, str) else state, encoding="utf-8")
    if isinstance(events, bytes):
        (path / "events.jsonl").write_bytes(events)
    else:
        lines = events if events is not None else GOOD_EVENTS
        text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
        (path / "events.jsonl").write_text(text, encoding="utf-8")
    return path


def runs_with(bad: list[object] | bytes, **kwargs: object) -> Setup:
    """Setup: in/runs holding a good run and one whose events.jsonl has the good events around ``bad``."""

    def setup(world: World) -> None:
        root = world.inputs / "runs"
        make_run(root, "good-20260101-000000")
        events = bad if isinstance(bad, bytes) else [*GOOD_EVENTS[:3], *bad, *GOOD_EVENTS[3:]]
        make_run(root, "spoofed-20260101-000001", events=events, **kwargs)  # type: ignore[arg-type]

    return setup


RUNS = ["runs", "--root", "{in}/runs"]
SHOW = ["runs", "show", "{in}/runs/spoofed-20260101-000001"]


def both_runs_listed(world: World, result: Result) -> None:
    assert "good-20260101-000000" in result.text and "spoofed-20260101-000001" in result.text


def shows_checkpoints(world: World, result: Result) -> None:
    assert "output/me-000002.safetensors" in result.text and "output/me-000004.safetensors" in result.text


SPOOFED_LINES: dict[str, list[object] | bytes] = {
    "loss-is-text": [{"event": "progress", "step": 3, "total": 4, "loss": "x"}],
    "step-is-null": [{"event": "progress", "step": None, "total": 4, "loss": 0.2}],
    "step-is-true": [{"event": "progress", "step": True, "total": 4}],
    "step-is-a-float": [{"event": "progress", "step": 2.5, "total": 4}],
    "step-is-a-list": [{"event": "progress", "step": [1], "total": 4}],
    "total-is-text": [{"event": "progress", "step": 3, "total": "all"}],
    "checkpoint-step-text": [{"event": "checkpoint", "path": "x.safetensors", "step": "3"}],
    "checkpoint-path-a-number": [{"event": "checkpoint", "path": 42, "step": 3}],
    "validation-loss-null": [{"event": "validation", "step": 3, "loss": None}],
    "failure-log-tail-a-string": [{"event": "failure", "kind": "other", "message": "m", "log_tail": "oops"}],
    "failure-log-tail-numbers": [{"event": "failure", "kind": "other", "message": "m", "log_tail": [1, 2]}],
    "failure-without-message": [{"event": "failure", "kind": "other"}],
    "finished-seconds-text": [{"event": "finished", "lora_path": "x", "seconds": "fast"}],
    "unknown-event": [{"event": "pwned", "step": 1}],
    "event-tag-a-number": [{"event": 7}],
    "no-event-tag": [{"step": 3, "loss": 0.1}],
    "a-json-list": [[1, 2, 3]],
    "a-json-string": ['"just text"'],
    "a-json-number": ["42"],
    "not-json": ["{torn line from a killed run"],
    "nested-deeply": ["[" * 100_000 + "]" * 100_000],
    "nan-and-infinity-loss": ['{"event": "progress", "step": 3, "total": 4, "loss": NaN, "lr": Infinity}'],
    "huge-line": [{"event": "log", "level": "info", "text": "x" * 5_000_000}],
    "markup-in-failure": [
        {"event": "failure", "kind": "other", "message": "[/] [bold red]boom[/bold red] [link=file:///etc]x"}
    ],
    "binary-garbage": b"\x00\xff\xfe\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40 + b"\n",
    "invalid-utf8-line": json.dumps(GOOD_EVENTS[1]).encode()
    + b'\n{"event": "log", "level": "info", "text": "caf\xe9"}\n',
}


def spoof_cases() -> list[Case]:
    cases = []
    for kind, lines in SPOOFED_LINES.items():
        warns = (
            r"warning:.*(skipped|line)"
            if kind not in ("nan-and-infinity-loss", "huge-line", "markup-in-failure")
            else r"spoofed"
        )
        cases.append(Case(f"runs-list-{kind}", RUNS, 0, warns, runs_with(lines), both_runs_listed))
        cases.append(Case(f"runs-show-{kind}", SHOW, 0, warns, runs_with(lines)))
    return cases


def show_json_is_strict(world: World, result: Result) -> None:
    data = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in --json output"))
    assert data["summary"]["name"] == "spoofed-20260101-000001"


def with_state(state: object) -> Setup:
    return lambda world: make_run(world.inputs / "runs", "spoofed-20260101-000001", state=state)


def dead_launcher(world: World) -> None:
    """run.json says running; the launcher recorded there (a real process on this host) has since been killed."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    identity = {**launcher_identity(), "pid": child.pid, "started": _start_ticks(child.pid)}
    child.kill()
    child.wait()
    make_run(
        world.inputs / "runs",
        "spoofed-20260101-000001",
        state={"backend": "kohya", "status": "running", "launcher": identity},
        events=GOOD_EVENTS[:3],
    )


def live_launcher(world: World) -> None:
    state = {"backend": "kohya", "status": "running", "launcher": launcher_identity()}  # this very process
    make_run(world.inputs / "runs", "spoofed-20260101-000001", state=state, events=GOOD_EVENTS[:3])


def reused_pid(world: World) -> None:
    """The launcher's pid now belongs to another process (this one): its start time tells them apart."""
    identity = {**launcher_identity(), "started": "1"}
    make_run(
        world.inputs / "runs",
        "spoofed-20260101-000001",
        state={"backend": "kohya", "status": "running", "launcher": identity},
        events=GOOD_EVENTS[:3],
    )


def other_host(world: World) -> None:
    identity = {**launcher_identity(), "pid": 2**22 + 7, "host": socket.gethostname() + "-elsewhere"}
    make_run(
        world.inputs / "runs",
        "spoofed-20260101-000001",
        state={"backend": "kohya", "status": "running", "launcher": identity},
        events=GOOD_EVENTS[:3],
    )


def _start_ticks(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]


def status_is(status: str) -> Callable[[World, Result], None]:
    def check(world: World, result: Result) -> None:
        assert f"kohya, {status}," in result.text, result.text

    return check


def finished_run(world: World) -> None:
    make_run(world.inputs / "runs", "done-20260101-000000")
    (world.inputs / "runs" / "done-20260101-000000" / "output" / "me.safetensors").write_bytes(b"the LoRA, kept")


def log_file(content: bytes) -> Setup:
    return lambda world: (world.inputs / "stderr.log").write_bytes(content)


def compare_runs_setup(world: World) -> None:
    runs_with(SPOOFED_LINES["loss-is-text"])(world)


CASES = [
    *spoof_cases(),
    Case("runs-show-json-nan-loss-is-null", [*SHOW, "--json"], 0, r"spoofed", runs_with(SPOOFED_LINES["nan-and-infinity-loss"]), show_json_is_strict),
    Case("runs-show-checkpoints-despite-bad-lines", SHOW, 0, r"skipped", runs_with(SPOOFED_LINES["loss-is-text"]), shows_checkpoints),
    Case("runs-events-file-is-a-folder", RUNS, 0, r"warning:.*cannot be read", lambda w: (make_run(w.inputs / "runs", "r-20260101-000000", events=[]), (w.inputs / "runs" / "r-20260101-000000" / "events.jsonl").unlink(), (w.inputs / "runs" / "r-20260101-000000" / "events.jsonl").mkdir())),
    Case("runs-run-json-garbage", RUNS, 0, r"spoofed.*\?", with_state("{not json")),
    Case("runs-run-json-a-list", RUNS, 0, r"spoofed", with_state("[1, 2]")),
    Case("runs-run-json-invalid-utf8", RUNS, 0, r"spoofed", lambda w: (make_run(w.inputs / "runs", "spoofed-20260101-000001"), (w.inputs / "runs" / "spoofed-20260101-000001" / "run.json").write_bytes(b'{"status": "\xff"}'))),
    Case("runs-status-a-number", RUNS, 0, r"spoofed", with_state({"backend": 7, "status": 3.5})),
    Case("runs-root-missing", ["runs", "--root", "{in}/nothere"], 0, r"run"),
    Case("runs-root-a-file", ["runs", "--root", "{in}/file"], 0, r"run", lambda w: (w.inputs / "file").write_text("x")),
    Case("runs-show-missing-folder", ["runs", "show", "{in}/runs/nope-20260101-000000"], 2, r"nope-20260101-000000 does not exist.*fix"),
    Case("runs-show-a-file", ["runs", "show", "{in}/file"], 2, r"file does not exist|not a loraforge run", lambda w: (w.inputs / "file").write_text("x")),
    Case("runs-show-not-a-run-folder", ["runs", "show", "{in}"], 2, r"not a loraforge run folder.*fix"),
    Case("runs-show-without-a-folder", ["runs", "show"], 2, r"needs a run folder"),
    Case("run-of-a-killed-launcher-shows-killed", SHOW, 0, r"killed.*is gone.*loraforge resume", dead_launcher, status_is("killed")),
    Case("run-of-a-live-launcher-shows-running", SHOW, 0, r"running", live_launcher, status_is("running")),
    Case("run-whose-launcher-pid-was-reused-shows-killed", SHOW, 0, r"killed", reused_pid, status_is("killed")),
    Case("run-launched-on-another-host-shows-running", SHOW, 0, r"running", other_host, status_is("running")),
    Case("runs-list-shows-a-killed-launcher", RUNS, 0, r"killed", dead_launcher),
    # --- resume
    Case("resume-a-finished-run", ["resume", "{in}/runs/done-20260101-000000"], 2, r"finished at step 4.*nothing to resume.*--steps", finished_run),
    Case("resume-a-missing-folder", ["resume", "{in}/runs/nope"], 2, r"nope does not exist"),
    Case("resume-a-folder-that-is-no-run", ["resume", "{in}"], 2, r"no run\.json|not a loraforge run"),
    Case("resume-with-a-broken-job-file", ["resume", "{in}/runs/spoofed-20260101-000001"], 2, r"job\.yaml", lambda w: make_run(w.inputs / "runs", "spoofed-20260101-000001", state={"backend": "kohya", "status": "failed"}, job_text="name: [me\n")),
    Case("resume-with-an-unknown-backend", ["resume", "{in}/runs/spoofed-20260101-000001"], 2, r"nosuch", with_state({"backend": "nosuch", "status": "failed"})),
    Case("resume-steps-not-more-than-done", ["resume", "{in}/runs/done-20260101-000000", "--steps", "2"], 2, r"already trained", finished_run),
    # --- parse-log
    Case("parse-log-missing-file", ["parse-log", "--backend", "kohya", "{in}/nope.log"], 2, r"nope\.log does not exist"),
    Case("parse-log-a-folder", ["parse-log", "--backend", "kohya", "{in}"], 2, r"is a folder"),
    Case("parse-log-binary-garbage", ["parse-log", "--backend", "kohya", "{in}/stderr.log"], 0, None, log_file(bytes(range(256)) * 100)),
    Case("parse-log-empty", ["parse-log", "--backend", "simpletuner", "{in}/stderr.log"], 0, None, log_file(b"")),
    Case("parse-log-stdout-missing", ["parse-log", "--backend", "kohya", "{in}/stderr.log", "--stdout", "{in}/nope.log"], 2, r"nope\.log does not exist", log_file(b"x\n")),
    Case("parse-log-huge-line-no-newline", ["parse-log", "--backend", "kohya", "{in}/stderr.log"], 0, None, log_file(b"\r" * 2_000_000 + b"x" * 3_000_000)),
    Case("parse-log-webhook-capture-spoofed", ["parse-log", "--backend", "simpletuner", "{in}/stderr.log"], 0, None, log_file(b'{"webhook_type": "raw", "message_type": "train", "state": {"global_step": "x", "loss": "y"}}\n')),
    # --- compare reads run folders too
    Case("compare-from-runs-with-spoofed-lines", ["compare", "--from-runs", "{in}/runs/good-20260101-000000", "{in}/runs/spoofed-20260101-000001", "-o", "{out}/report"], 0, r"report", compare_runs_setup),
    # --- secrets never echoed from a run folder
    Case("runs-show-does-not-print-a-secret-from-run-json", SHOW, 0, r"spoofed", with_state({"backend": "kohya", "status": "failed", "api_key": SECRET})),
]  # fmt: skip


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_runs(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)


# --- what needs a real process ----------------------------------------------------------------------------------


def test_two_runs_racing_in_create_run_get_two_folders(tmp_path: Path) -> None:
    """Eight processes create a run of the same job at the same moment: eight folders, each owner-only, none shared."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from orchestrator.job import build_job\n"
        "from orchestrator.runs import create_run\n"
        "job = build_job({'name': 'race', 'base_model': 'org/m', 'dataset': '.', 'training': {'steps': 1}})\n"
        "start = float(sys.argv[1])\n"
        "while time.time() < start: pass\n"
        "print(create_run(job, 'kohya', root=Path(sys.argv[2])).path)\n"
    )
    start = time.time() + 2.0
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(start), str(tmp_path / "runs")], stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    paths = [child.communicate(timeout=60)[0].strip() for child in children]
    assert all(child.returncode == 0 for child in children)
    assert len(set(paths)) == 8, paths
    for path in paths:
        assert (Path(path).stat().st_mode & 0o777) == 0o700
        assert json.loads((Path(path) / "run.json").read_text())["status"] == "created"


@pytest.mark.parametrize("whole_group", [False, True], ids=["sigint-to-loraforge", "ctrl-c-to-the-terminal-group"])
def test_ctrl_c_exits_130(tmp_path: Path, whole_group: bool) -> None:
    """Ctrl-C while a command waits (here `captions --edit` on an editor that takes its time) ends loraforge with
    exit status 130 and one line, no traceback; the dataset is unchanged. A terminal's Ctrl-C reaches the whole
    foreground group (the editor too); a plain `kill -INT` reaches loraforge alone."""
    import signal

    from test_hostile_harness import dataset, snapshot

    data = dataset(tmp_path / "ds")
    before = snapshot(data)
    env = {**os.environ, "EDITOR": "sh -c 'exec sleep 60'", "VISUAL": ""}
    argv = [sys.executable, "-m", "orchestrator.cli", "captions", str(data), "--edit"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    time.sleep(3)  # loraforge has started the editor and waits for it
    assert child.poll() is None, child.communicate()[0].decode()
    if whole_group:
        os.killpg(child.pid, signal.SIGINT)
    else:
        child.send_signal(signal.SIGINT)
    output, _ = child.communicate(timeout=30)
    text = output.decode(errors="replace")
    assert child.returncode == 130, text
    assert "Traceback" not in text and "interrupted" in text
    assert snapshot(data) == before


def test_a_killed_launcher_is_shown_killed_for_real(tmp_path: Path) -> None:
    """A real launcher process records itself in run.json (as training does when it starts the trainer) and is
    SIGKILLed: `runs show` says killed and how to continue, not running forever."""
    from test_hostile_harness import run_cli

    run = make_run(
        tmp_path / "runs", "me-20260101-000000", events=GOOD_EVENTS[:3], state={"backend": "kohya", "status": "created"}
    )
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from orchestrator.runs import RunDir, launcher_identity\n"
        f"RunDir(Path({str(run)!r})).update_state(status='running', launcher=launcher_identity())\n"
        "print('running', flush=True)\n"
        "time.sleep(120)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert launcher.stdout is not None and launcher.stdout.readline().strip() == "running"
    assert "kohya, running," in run_cli(["runs", "show", str(run)]).text
    launcher.kill()
    launcher.wait()
    result = run_cli(["runs", "show", str(run)])
    assert result.code == 0 and "kohya, killed," in result.text and f"loraforge resume {run}" in result.text
    assert json.loads((run / "run.json").read_text())["status"] == "running", "a reader must not rewrite run.json"


# --- text from files and trainers is printed as text, never as rich markup ------------------------------------

MARKUP = "runs/[/]photos [me]/x"  # "[/]" makes rich raise; "[me]" would be eaten as a style tag


@pytest.mark.parametrize("display", ["PlainDisplay", "QuietDisplay"])
def test_the_display_prints_paths_and_messages_as_they_are(display: str, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator import display as module
    from orchestrator.events import Checkpoint, Failure, Finished

    shown = getattr(module, display)()
    for event in (
        Failure("other", f"boom in {MARKUP}", f"look at {MARKUP}", [], MARKUP),
        Checkpoint(MARKUP, 3),
        Finished(MARKUP, 1.0),
    ):
        shown.handle(event)
    assert capsys.readouterr().err.count(MARKUP) >= 2
