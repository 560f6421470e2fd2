"""The CLI starts fast: --help imports neither torch nor jinja2 nor a backend."""

from __future__ import annotations

import subprocess
import sys


def _imported_after(args: list[str]) -> set[str]:
    code = (
        "import sys\nfrom orchestrator.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_help_imports_nothing_heavy() -> None:
    modules = _imported_after(["--help"])
    for heavy in ("torch", "jinja2", "transformers", "PIL", "numpy", "backends.kohya", "backends.simpletuner"):
        assert heavy not in modules, heavy


def test_subcommand_help_imports_nothing_heavy() -> None:
    modules = _imported_after(["train", "--help"])
    assert "torch" not in modules and "jinja2" not in modules


def test_unknown_command_is_an_argparse_error() -> None:
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_config_error_exits_2_with_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    job = tmp_path / "job.yaml"
    job.write_text("name: me\nbase_model: m\ndataset: d\ntraining: {steps: 5}\nnetwork: {rank: 0}\n")
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "render", str(job), "-o", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2, out.stderr
    assert "network.rank: got 0" in out.stderr
    assert "Traceback" not in out.stderr
