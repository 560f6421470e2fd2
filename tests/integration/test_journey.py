"""The journey users walk, on real photos and each backend: photos -> prep -> captions -> plan -> training -> LoRA,
through the one-shot `loraforge train PHOTOS`, checking that every stage agrees on the same facts: prep's
accepted count, the step plan's image count, the LoRA metadata's count and the backend's own record are one
number; the trigger is in every caption the backend trained on; one Progress per step, phases in order.

And the trigger is the job's: a job over captions that lack it is refused with the fix, or fixed on request in
the run's copy only, on both backends.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import usable_env
from photos import sample_photos

pytestmark = pytest.mark.integration

TRIGGER = "ohwx thing"


def tiny_model(backend: str, python: Path) -> Path:
    from orchestrator import tiny

    return tiny.tiny_sd15(python) if backend == "kohya" else tiny.tiny_sdxl(python)


def header(path: Path) -> dict:
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(size))


def cli(*args: str, timeout: int = 1500) -> tuple[int, list[dict], str]:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True, timeout=timeout
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, events, result.stderr


def backend_record(backend: str, run: Path, metadata: dict) -> int:
    """How many images the backend itself says it trained on."""
    if backend == "kohya":
        return int(metadata["ss_num_train_images"])
    # SimpleTuner's aspect-bucket index, written into the image folder it read: every image it bucketed
    (index,) = run.joinpath("data").glob("aspect_ratio_bucket_indices*.json")
    buckets = json.loads(index.read_text())["aspect_ratio_bucket_indices"]
    return sum(len(files) for files in buckets.values())


@pytest.mark.parametrize("backend", ["kohya", "simpletuner"])
def test_photos_to_lora_every_stage_agrees(backend: str, backend_home: dict, tmp_path: Path) -> None:
    env = usable_env(backend_home, backend)
    model = tiny_model(backend, env.python)
    photos = sample_photos(tmp_path / "photos")
    runs = tmp_path / "runs"
    code, events, stderr = cli(
        "train", str(photos), "--backend", backend, "--base-model", str(model), "--trigger", TRIGGER,
        "--subject", "object", "--captioner", "template", "--resolution", "256", "--steps", "2",
        "--output-dir", str(runs), "--json",
        "--set", "training.precision=fp32", "--set", "training.gradient_checkpointing=false",
    )  # fmt: skip
    assert code == 0, stderr[-4000:]

    (dataset,) = (runs / "datasets").iterdir()
    manifest = json.loads((dataset / "manifest.json").read_text())
    accepted = [image for image in manifest["images"] if image["verdict"] == "accepted"]
    assert 0 < len(accepted) < 18  # real photos: some are rejected (too small, blurry, duplicates)
    assert not [p for p in dataset.rglob("*") if any(part.startswith(".") for part in p.relative_to(dataset).parts)]

    plan = next(e["text"] for e in events if e["event"] == "log" and e["text"].startswith("step plan"))
    planned = int(re.search(r": (\d+) images", plan).group(1))
    (run,) = [p for p in runs.iterdir() if p.name != "datasets"]
    (lora,) = (run / "output").glob("*.safetensors")
    metadata = header(lora)["__metadata__"]
    assert planned == len(accepted) == int(metadata["loraforge_dataset_images"]) == backend_record(backend, run, metadata)
    assert metadata["loraforge_trigger"] == TRIGGER
    assert metadata["loraforge_base_model"] == model.name  # never this machine's folders

    trained_captions = sorted((run / "data").glob("*.txt"))
    assert len(trained_captions) == planned
    assert all(TRIGGER in caption.read_text() for caption in trained_captions)

    steps = [e for e in events if e["event"] == "progress"]
    assert [e["step"] for e in steps] == [1, 2] and all(e["loss"] is not None for e in steps)
    phases = [e["name"] for e in events if e["event"] == "phase"]
    assert phases[0] == "setup" and phases[-2:] == ["saving", "done"] and len(phases) == len(set(phases))


# --- the trigger is the job's -------------------------------------------------------------------------------------


def captioned_without_trigger(folder: Path) -> Path:
    from orchestrator.tiny.dataset import make_dataset

    dataset = make_dataset(folder, count=4, size=128)
    for caption in dataset.glob("*.txt"):
        caption.write_text("a red circle on a light background")
    return dataset


def job_file(tmp_path: Path, backend: str, model: Path, dataset: Path, **extra: object) -> Path:
    import yaml

    job = {
        "name": f"trigger-{backend}",
        "base_model": str(model),
        "trigger": "zqx gadget",
        "dataset": str(dataset),
        "network": {"rank": 4},
        "training": {
            "steps": 1,
            "resolution": 64 if backend == "kohya" else 128,  # sd-scripts trains SD 1.5's full-size UNet
            "precision": "fp32",
            "gradient_checkpointing": False,
        },
        "output": {"dir": str(tmp_path / "runs")},
        **extra,
    }
    path = tmp_path / f"job-{backend}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.mark.parametrize("backend", ["kohya", "simpletuner"])
def test_captions_without_the_trigger_are_refused_or_fixed_in_the_run_copy(
    backend: str, backend_home: dict, tmp_path: Path
) -> None:
    env = usable_env(backend_home, backend)
    model = tiny_model(backend, env.python)
    dataset = captioned_without_trigger(tmp_path / "data")
    before = {p.name: p.read_text() for p in dataset.glob("*.txt")}

    code, _, stderr = cli("train", str(job_file(tmp_path, backend, model, dataset)), "--backend", backend)
    assert code == 2 and "Traceback" not in stderr
    assert "4 of 4 captions" in stderr and "zqx gadget" in stderr and "loraforge caption" in stderr
    assert not (tmp_path / "runs").exists()  # refused before anything started

    code, events, stderr = cli(
        "train", str(job_file(tmp_path, backend, model, dataset)), "--backend", backend, "--add-trigger", "--json"
    )
    assert code == 0, stderr[-4000:]
    assert any("added to 4 of 4 captions" in e.get("text", "") for e in events)
    (run,) = (tmp_path / "runs").iterdir()
    trained = sorted(p.read_text() for p in (run / "data").glob("*.txt"))
    assert trained == ["zqx gadget, a red circle on a light background"] * 4
    assert {p.name: p.read_text() for p in dataset.glob("*.txt")} == before  # the user's captions untouched


def test_a_job_the_backend_refuses_while_rendering_leaves_no_run_folder(backend_home: dict, tmp_path: Path) -> None:
    """sd-scripts trains SD3 from single files: a diffusers folder alone is refused before launch, in one line,
    and the run folder made for it is gone again (nothing ran, nothing of the user's was in it)."""
    usable_env(backend_home, "kohya")
    model = tmp_path / "sd3-diffusers"
    (model / "transformer").mkdir(parents=True)
    (model / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    dataset = captioned_without_trigger(tmp_path / "data")
    code, _, stderr = cli("train", str(job_file(tmp_path, "kohya", model, dataset)), "--backend", "kohya", "--add-trigger")
    assert code == 2 and "Traceback" not in stderr and "simpletuner" in stderr.lower(), stderr[-2000:]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
