"""A second sd-scripts run on the same tiny model and photos loads what the first one cached to disk (latents; for
SD3 the text encoders' outputs too) from loraforge's cache folder, hard-linked into the run's copy of the dataset,
instead of computing it again; the user's dataset never holds a cache file.

Two one-step runs a family, `slow` (measured on 2 cores, a busy machine giving the larger figures): SD 1.5 41-53 s
(sd-scripts' start, ~17 s a run, is most of it); SD3 45-98 s and ~11.5 GB of RAM (its first run encodes the captions
with a full-size T5-XXL). The keys themselves are checked in tests/unit/test_reuse.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import usable_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# what sd-scripts writes beside the two 64 px images (library/strategy_sd.py, strategy_sd3.py)
CACHED = {
    "sd15": {"latents": ["shape_00_0064x0064_sd.npz", "shape_01_0064x0064_sd.npz"]},
    "sd3": {
        "latents": ["shape_00_0064x0064_sd3.npz", "shape_01_0064x0064_sd3.npz"],
        "text-encoder outputs": ["shape_00_sd3_te.npz", "shape_01_sd3_te.npz"],
    },
}


@pytest.mark.parametrize("family", ["sd15", "sd3"])
def test_the_second_kohya_run_loads_what_the_first_one_cached(backend_home: dict, tmp_path: Path, family: str) -> None:
    from backends import base
    from orchestrator.envs import cache_dir
    from orchestrator.events import Log, Progress
    from orchestrator.job import build_job
    from orchestrator.preflight import preflight
    from orchestrator.runs import create_run
    from orchestrator.tiny import tiny_sd3, tiny_sd15
    from orchestrator.tiny.dataset import make_dataset
    from orchestrator.training import run_training

    env = usable_env(backend_home, "kohya")
    if family == "sd15":
        model, extra = tiny_sd15(env.python), {}
    else:  # built with SimpleTuner's venv (diffusers >= 0.33); a 32-token T5: at 256 it takes minutes a caption
        model, extra = tiny_sd3(usable_env(backend_home, "simpletuner").python), {"t5xxl_max_token_length": 32}
    data = make_dataset(tmp_path / "data", count=2, size=64)
    before = sorted(p.name for p in data.iterdir())
    spec = {
        "name": "reuse",
        "base_model": str(model),
        "family": family,
        "trigger": "ohwx",
        "add_trigger": True,
        "dataset": str(data),
        "network": {"rank": 4, "alpha": 2},
        "training": {"steps": 1, "batch_size": 1, "resolution": 64, "precision": "fp32"},
        "backend_args": {"kohya": extra},
        "output": {"dir": str(tmp_path / "runs")},
    }
    job = build_job(spec)
    outcomes, logs = [], []
    for _ in range(2):
        seen: list = []
        start, first_step = time.monotonic(), []

        def note(event: object, seen: list = seen, start: float = start, first_step: list = first_step) -> None:
            if isinstance(event, Progress) and not first_step:
                first_step.append(time.monotonic() - start)
            seen.append(event)

        outcome = run_training(job, "kohya", handlers=[note])
        assert outcome.ok, outcome.failure
        outcomes.append(outcome)
        logs.append([e.text for e in seen if isinstance(e, Log)])
        print(f"{family} run {len(outcomes)}: first step after {first_step[0]:.1f} s, {outcome.seconds:.1f} s in all")

    assert not any("reusing" in text for text in logs[0])
    shared: dict[str, Path] = {}
    for what, names in CACHED[family].items():
        assert f"reusing 2 cached {what} from an earlier run" in logs[1], logs[1]
        (folder,) = {p.parent for p in (cache_dir() / "reuse").glob("*/*") if p.name in names}  # one key a kind
        assert sorted(p.name for p in folder.iterdir()) == names  # cache files only: no image, caption or marker
        shared |= {name: folder / name for name in names}
    for name, cached in shared.items():
        used = outcomes[1].run.data / name
        # the file the first run made, untouched: sd-scripts found it valid and did not compute it again
        assert os.stat(used).st_ino == os.stat(cached).st_ino
        assert os.stat(used).st_mtime_ns == os.stat(outcomes[0].run.data / name).st_mtime_ns
    assert sorted(p.name for p in data.iterdir()) == before  # nothing cached in the user's dataset

    # another resolution, image or caption: another key (a fresh cache), never the files above
    def keys(**training: object) -> dict[str, str]:
        ready = preflight(build_job({**spec, "training": {**spec["training"], **training}}), "kohya")
        rendered = base.get("kohya").render(ready.job, ready.dataset, create_run(ready.job, "kohya"), ready.env)
        return {r.what: r.key for r in rendered.reuse}  # as a run renders it: captions with the trigger added

    used_keys = {what: shared[names[0]].parent.name for what, names in CACHED[family].items()}
    assert keys() == used_keys
    assert keys(resolution=128)["latents"] != used_keys["latents"]
    (data / "shape_00.txt").write_text("ohwx, a photo of something else", encoding="utf-8")
    if family == "sd3":
        assert keys()["text-encoder outputs"] != used_keys["text-encoder outputs"]
    assert keys()["latents"] == used_keys["latents"]  # a caption changes no latent
    image = data / "shape_00.png"
    image.write_bytes(image.read_bytes() + b"\0")
    assert keys()["latents"] != used_keys["latents"]
