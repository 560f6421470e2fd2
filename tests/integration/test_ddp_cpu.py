"""Two real processes on CPU (accelerate -> torchrun, gloo).

SimpleTuner trains the tiny SDXL with two processes (runs in CI): one progress stream, one LoRA. sd-scripts cannot
(accelerate wraps its frozen U-Net in DDP on CPU): the refusal is checked, and a canary on the kohya environment's
own accelerate shows the reason still holds in a real 2-process gloo run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_kohya_tiny import kohya, write_job  # noqa: F401  (fixtures)
from test_simpletuner_tiny import st_env, tiny_job, tiny_root  # noqa: F401  (fixtures)

from orchestrator.events import Event, Failure, Finished, Log, Progress, read_events

pytestmark = pytest.mark.integration


def one_stream(events: list[Event]) -> list[int]:
    """The steps of the run's Progress events; fails if a second rank's count shows (a step going back or twice
    with a fresh loss reading)."""
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == sorted(steps), f"progress went backwards: {steps}"
    read = [e.step for e in events if isinstance(e, Progress) and e.loss is not None]
    assert len(read) == len(set(read)), f"a step was read twice with its loss: {read}"
    return steps


def two_processes(job):  # type: ignore[no-untyped-def]
    return job.model_copy(update={"distributed": job.distributed.model_copy(update={"gpus": 2})})


def test_simpletuner_two_cpu_processes(st_env, tiny_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from safetensors import safe_open

    from orchestrator.training import run_training

    job = two_processes(tiny_job(st_env, tiny_root, tmp_path, steps=4))
    seen: list[Event] = []
    outcome = run_training(job, "simpletuner", handlers=[seen.append])
    assert outcome.ok, outcome.failure
    rendered = outcome.run.rendered
    config = yaml.safe_load((rendered / "accelerate.yaml").read_text())
    assert (config["distributed_type"], config["num_processes"], config["use_cpu"]) == ("MULTI_GPU", 2, True)
    assert "ACCELERATE_USE_CPU=true" in (rendered / "command.txt").read_text()
    assert any(isinstance(e, Log) and "2 CPU processes (gloo)" in e.text for e in seen)
    events = read_events(outcome.run.events_file)
    steps = one_stream(events)
    progress = [e for e in events if isinstance(e, Progress)]
    # 4 images, batch 1: 4 steps are 2 epochs only when each epoch's 4 batches are shared by 2 processes
    assert steps == [1, 2, 3, 4] and progress[-1].total == 4 and progress[-1].epochs == 2
    assert all(e.loss is not None for e in progress)  # one Progress per step, with its loss
    assert not any(isinstance(e, Failure) for e in events) and isinstance(events[-1], Finished)
    assert outcome.lora is not None
    with safe_open(str(outcome.lora), "np") as f:
        assert any(k.endswith(".lora_down.weight") for k in f.keys())  # noqa: SIM118  (safe_open is not iterable)


def test_kohya_several_cpu_processes_refused_before_launch(tmp_path: Path, kohya: dict) -> None:  # noqa: F811
    """sd-scripts cannot train with several CPU processes (see the canary below): a clear refusal, no run started."""
    job = write_job(tmp_path, kohya)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "train", str(job), "--backend", "kohya", "--gpus", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LORAFORGE_HOME": str(kohya["home"])},
    )
    assert out.returncode != 0
    text = " ".join((out.stdout + out.stderr).split())
    assert "sd-scripts cannot train with several CPU processes" in text and "--gpus 1" in text
    assert "Traceback" not in text
    assert not list((tmp_path / "runs").glob("*/logs/stderr.log"))  # nothing was launched


CANARY = """
import torch
from accelerate import Accelerator

accelerator = Accelerator()
print(f"joined {accelerator.distributed_type} world={accelerator.num_processes} "
      f"backend={torch.distributed.get_backend()}", flush=True)
trained = accelerator.prepare(torch.nn.Linear(2, 2))  # a LoRA-like module with trainable parameters: fine
frozen = torch.nn.Linear(2, 2).requires_grad_(False)
accelerator.prepare(frozen)  # what sd-scripts does with its U-Net
"""


def test_accelerate_still_wraps_frozen_modules_on_cpu(real_registry: Path, tmp_path: Path) -> None:
    """The reason loraforge refuses sd-scripts on several CPU processes, checked on the kohya environment's own
    accelerate: a real 2-process gloo run in which preparing a frozen module fails on every rank. When this test
    fails, accelerate has stopped doing that: lift the refusal in backends/kohya/options.py render_accelerate."""
    from orchestrator.distributed import free_port
    from orchestrator.envs import load_registry
    from orchestrator.launch import run_process

    env = load_registry().get("kohya")
    if env is None or not env.python.exists():
        pytest.skip("the kohya environment is not set up: run `loraforge setup kohya`")
    script = tmp_path / "canary.py"
    script.write_text(CANARY)
    from backends.kohya import KohyaLogParser

    parser = KohyaLogParser()
    seen: list[Event] = []
    argv = [str(env.python), "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    argv += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    argv += ["--main_process_port", str(free_port()), str(script)]
    result = run_process(
        argv,
        env={**os.environ, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": ""},
        cwd=tmp_path,
        log_dir=tmp_path / "logs",
        on_output=lambda stream, data: seen.extend(parser.feed(data, stream)),
    )
    seen += parser.finish(result.returncode)
    stdout = (tmp_path / "logs" / "stdout.log").read_text()
    assert stdout.count("joined DistributedType.MULTI_CPU world=2 backend=gloo") == 2, stdout
    assert result.returncode != 0
    (failure,) = [e for e in seen if isinstance(e, Failure)]
    assert "failed on rank" in failure.message and "DistributedDataParallel is not needed" in failure.message
