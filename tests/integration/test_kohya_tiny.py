"""sd-scripts for real on a tiny SD 1.5 built at test time: train 4 steps and check the LoRA; stop a run at its
first checkpoint and resume it to the end from the saved step.

Needs the sd-scripts checkout (third_party/sd-scripts) and a registered kohya environment; skipped otherwise.
The tiny model keeps SD 1.5's UNet geometry (sd-scripts loads it strictly): ~3.2 GB, ~7 GB RAM while training.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SETUP = "run `git submodule update --init third_party/sd-scripts` then `loraforge setup kohya`"


def lora_header(path: Path) -> dict:
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(size))


@pytest.fixture(scope="module")
def kohya(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from conftest import _REAL_HOME

    from backends import base
    from orchestrator.envs import load_registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAFORGE_HOME", str(_REAL_HOME))
        env = load_registry().get("kohya")
        if env is None:
            pytest.skip(f"the kohya backend is not set up: {SETUP}")
        problems = base.get("kohya").check(env)
        if problems:
            pytest.skip(f"kohya environment not usable ({problems[0].message}): {SETUP}")
        from orchestrator.tiny import tiny_sd15
        from orchestrator.tiny.dataset import make_dataset

        model = tiny_sd15(env.python)  # cached in the machine's loraforge cache: built once
    data = make_dataset(tmp_path_factory.mktemp("data"), count=4, size=64)
    return {"home": _REAL_HOME, "model": model, "data": data}


def write_job(folder: Path, kohya: dict, **training: object) -> Path:
    import yaml

    job = {
        "name": "tiny-kohya",
        "base_model": str(kohya["model"]),
        "dataset": str(kohya["data"]),
        "trigger": "ohwx",
        "add_trigger": True,  # the generated captions lack it: this run's copy gets it in front
        "network": {"rank": 4, "alpha": 2},
        "training": {
            "steps": 4,
            "batch_size": 2,
            "resolution": 64,
            "precision": "fp32",
            "gradient_checkpointing": False,
            **training,
        },
        "saving": {"every_n_steps": 2},
        "output": {"dir": str(folder / "runs")},
    }
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_train_four_steps_and_check_the_lora(tmp_path: Path, kohya: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAFORGE_HOME", str(kohya["home"]))
    job = write_job(tmp_path, kohya, shuffle_captions=True)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "train", str(job), "--backend", "kohya", "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    events = [json.loads(line) for line in out.stdout.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["step"] for e in progress] == [1, 2, 3, 4] and progress[-1]["total"] == 4  # one event per step
    assert all(e["loss"] is not None for e in progress)
    phases = [e["name"] for e in events if e["event"] == "phase"]
    assert phases[0] == "setup" and phases[-1] == "done" and "training" in phases
    finished = events[-1]
    assert finished["event"] == "finished"
    lora = Path(finished["lora_path"])
    assert lora.name == "tiny-kohya.safetensors" and lora.parent.name == "output"
    header = lora_header(lora)
    keys = [k for k in header if k != "__metadata__"]
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in keys)
    down = next(k for k in keys if k.endswith(".lora_down.weight"))
    assert header[down]["shape"][0] == 4
    metadata = header["__metadata__"]
    assert metadata["ss_network_dim"] == "4"
    # the step plan, loraforge's metadata and sd-scripts' own record count the same images
    assert metadata["ss_num_train_images"] == metadata["loraforge_dataset_images"] == "4"
    (subset,) = json.loads(metadata["ss_datasets"])[0]["subsets"]
    assert (subset["shuffle_caption"], subset["keep_tokens"]) == (True, 1)  # the trigger stays in front
    run = lora.parent.parent
    assert (run / "logs" / "stderr.log").stat().st_size > 0 and (run / "rendered" / "config.toml").exists()
    captions = [p.read_text() for p in (run / "data").glob("*.txt")]  # what sd-scripts trained on
    assert len(captions) == 4 and all(c.startswith("ohwx, a ") for c in captions)


def test_stop_at_the_first_checkpoint_then_resume_to_the_end(
    tmp_path: Path, kohya: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LORAFORGE_HOME", str(kohya["home"]))
    from orchestrator.events import Checkpoint, Progress
    from orchestrator.job import build_job, load_yaml_layer
    from orchestrator.resume import find_resume_point, resume_run
    from orchestrator.training import run_training

    job = build_job(load_yaml_layer(write_job(tmp_path, kohya, steps=6)))
    child = {}
    seen = []

    def on_event(event) -> None:  # type: ignore[no-untyped-def]
        seen.append(event)
        saved = [e.step for e in seen if isinstance(e, Checkpoint)]
        # Ctrl-C, as a user would, once training has moved past the first checkpoint (its state is written by then)
        if saved and isinstance(event, Progress) and event.step > saved[0] and "process" in child:
            child["process"].stop()

    first = run_training(job, "kohya", handlers=[on_event], on_start=lambda c: child.setdefault("process", c))
    assert not first.ok and first.failure is not None
    assert first.run.state()["status"] == "interrupted"
    assert (first.run.logs / "stderr.log").stat().st_size > 0
    _, _, point = find_resume_point(first.run)
    assert point is not None and point.step >= 2

    assert resume_run(first.run.path, quiet=True) == 0
    from orchestrator.events import read_events

    events = read_events(first.run.events_file)
    after = [e for e in events[len(seen) :] if isinstance(e, Progress)]
    assert after[0].step > point.step - 1 and after[0].step >= 3  # continued, not restarted at step 1
    assert after[-1].step == 6 and after[-1].total == 6
    assert (first.run.output / "tiny-kohya.safetensors").exists()
