"""Ray executor without Ray: the entrypoint, attempt ids, the retry rule, flag checks, and lazy/missing ray."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator.errors import LoraforgeError
from orchestrator.executors.rayjobs import (
    RayOptions,
    attempt_id,
    connect,
    entrypoint,
    forwarded_env,
    why_not_retry,
)


def test_entrypoint_runs_the_agent_quoted_and_exec(tmp_path: Path) -> None:
    line = entrypoint(tmp_path / "my job", python="/opt/py thon", repo=Path("/src/lora forge"))
    assert line == f"cd '/src/lora forge' && exec '/opt/py thon' -m orchestrator.agent '{tmp_path}/my job'"


def test_attempt_ids_are_fixed_so_ray_refuses_a_second_submission() -> None:
    assert [attempt_id("lf-abc", n) for n in range(3)] == ["lf-abc", "lf-abc-r1", "lf-abc-r2"]


def test_only_loraforge_and_hub_settings_are_forwarded() -> None:
    env = {"LORAFORGE_HOME": "/h", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/bin", "SECRET": "x"}
    assert forwarded_env(env) == {"LORAFORGE_HOME": "/h", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_options_round_trip(tmp_path: Path) -> None:
    RayOptions("http://head:8265", 2, 3).save(tmp_path)
    assert RayOptions.load(tmp_path) == RayOptions("http://head:8265", 2, 3)


@pytest.mark.parametrize(
    ("attempt", "retries", "cancelled", "step", "kind", "expected"),
    [
        (0, 2, False, 30, None, None),  # a node death after a checkpoint: resubmit
        (1, 2, False, 30, "killed", None),
        (2, 2, False, 30, None, "all 2 retries used"),
        (0, 0, False, 30, None, "submitted without --retries"),
        (0, 2, True, 30, None, "cancelled"),
        (0, 2, False, None, None, "no checkpoint was saved"),
        (0, 2, False, 30, "bad_argument", "which a retry would repeat"),
    ],
)
def test_retry_rule(
    attempt: int, retries: int, cancelled: bool, step: int | None, kind: str | None, expected: str | None
) -> None:
    why = why_not_retry(attempt, retries, cancelled=cancelled, resume_step=step, failure_kind=kind)
    assert why is None if expected is None else (why is not None and expected in why)


def test_missing_ray_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray.job_submission", None)  # import fails as if ray were not installed
    with pytest.raises(LoraforgeError, match="needs the ray package") as info:
        connect("http://127.0.0.1:8265")
    assert "loraforge[ray]" in (info.value.hint or "")


def test_help_and_the_executor_registry_never_import_ray() -> None:
    from orchestrator.cli import main
    from orchestrator.executors import EXECUTORS, get

    before = set(sys.modules)
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    get("ray")
    assert not {name for name in set(sys.modules) - before if name == "ray" or name.startswith("ray.")}
    assert list(EXECUTORS) == ["slurm", "ray"]
    with pytest.raises(LoraforgeError, match="unknown executor 'k8s'"):
        get("k8s")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--executor", "ray"], "needs the Ray head's address"),
        (["--executor", "ray", "--address", "http://h:8265", "--nodes", "2"], "one node"),
        (["--executor", "ray", "--address", "http://h:8265", "--time", "1:00:00"], "--time: Slurm options"),
        (["--executor", "ray", "--address", "http://h:8265", "--requeue"], "--requeue: Slurm options"),
        (["--executor", "ray", "--address", "http://h:8265", "--sweep", "s.yaml"], "Slurm job array"),
        (["--executor", "ray", "--address", "http://h:8265", "--retries", "-1"], "must be 0 or more"),
        (["--retries", "2"], "--retries is for --executor ray"),
    ],
)
def test_flags_of_the_other_executor_are_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    from orchestrator.cli import main
    from orchestrator.executors.base import jobs_dir

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "job.yaml").write_text("name: x\n")
    assert main(["submit", str(tmp_path / "job.yaml"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not jobs_dir().exists()


def test_a_failed_attempt_is_summed_up_in_one_line() -> None:
    from orchestrator.executors.rayjobs import failure_summary

    # Ray 2.60's message for an agent whose job had no images (its log tail, shortened)
    message = (
        "Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\n"
        '  File "/opt/loraforge/orchestrator/training.py", line 101, in preflight\n'
        "    raise LoraforgeError(\n"
        "orchestrator.errors.LoraforgeError: dataset folder /data/photos has no images (.bmp, .jpeg)\n"
        "  fix: put your photos there, or prepare them with `loraforge prep PHOTOS -o /data/photos`\n"
    )
    assert failure_summary(message) == (
        "Job entrypoint command failed with exit code 1: LoraforgeError: dataset folder /data/photos has no images "
        "(.bmp, .jpeg)"
    )
    killed = "Job entrypoint command failed with exit code -9, last available logs (truncated to 20,000 chars):\n"
    assert failure_summary(killed) == "Job entrypoint command failed with exit code -9"
    assert failure_summary("") == "failed"
