"""Caches reused between runs (orchestrator/reuse.py): seeded by link, harvested by atomic rename, keyed by what
their content depends on."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from backends import base
from orchestrator.dataset.model import load_dataset
from orchestrator.envs import BackendEnv, resolve_runtime
from orchestrator.job import build_job
from orchestrator.reuse import Reuse, harvest, key, seed
from orchestrator.runs import create_run


def test_a_run_gets_what_an_earlier_one_left_and_gives_back_what_it_added(tmp_path: Path) -> None:
    first = Reuse(tmp_path / "run1" / "cache" / "text", key("x", 1), "text embeddings")
    (first.local / "sub").mkdir(parents=True)
    (first.local / "a.pt").write_bytes(b"A")
    (first.local / "sub" / "b.pt").write_bytes(b"B")
    assert seed(first) == 0 and harvest(first) == 2
    second = Reuse(tmp_path / "run2" / "cache" / "text", first.key, "text embeddings")
    assert seed(second) == 2
    assert (second.local / "sub" / "b.pt").read_bytes() == b"B"
    assert os.stat(second.local / "a.pt").st_ino == os.stat(first.shared / "a.pt").st_ino  # a link, not a copy
    (second.local / "c.pt").write_bytes(b"C")
    assert harvest(second) == 1  # only what it added
    assert not list(first.shared.glob(".tmp-*"))
    other = Reuse(tmp_path / "run3" / "cache" / "text", key("x", 2), "text embeddings")
    assert seed(other) == 0  # another key: nothing stale reaches it


def test_simpletuner_keys_follow_what_its_caches_depend_on(tmp_path: Path) -> None:
    from orchestrator.tiny.dataset import make_dataset

    data = make_dataset(tmp_path / "data", count=2, size=64)
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "weights.safetensors").write_bytes(b"x")

    def keys(gpu: bool, **training: object) -> dict[str, str]:
        job = build_job({"name": "k", "base_model": str(model), "family": "sdxl", "dataset": str(data),
                         "training": {"steps": 2, "resolution": 128, **training},
                         "output": {"dir": str(tmp_path / "runs")}})  # fmt: skip
        env = BackendEnv("simpletuner", Path(sys.executable), versions={"cuda": "12.8" if gpu else "no"})
        rendered = base.get("simpletuner").render(job, load_dataset(data), create_run(job, "simpletuner"),
                                                  resolve_runtime(env, environ={}))  # fmt: skip
        return {r.what: r.key for r in rendered.reuse}

    cpu, gpu = keys(False), keys(True)
    assert set(cpu) == {"text embeddings"}  # on CPU latents are made on demand, never written
    assert set(gpu) == {"text embeddings", "latents"} and gpu["text embeddings"] == cpu["text embeddings"]
    assert keys(True) == gpu  # the same job: the same keys
    assert keys(True, resolution=256)["latents"] != gpu["latents"]
    assert keys(True, resolution=256)["text embeddings"] == gpu["text embeddings"]
    (next(data.glob("*.png"))).write_bytes((next(data.glob("*.png"))).read_bytes() + b"\0")  # an image changed
    assert keys(True)["latents"] != gpu["latents"]
    (model / "unet" / "weights.safetensors").write_bytes(b"another model")
    assert keys(True)["text embeddings"] != gpu["text embeddings"]


def test_a_glob_takes_the_cache_files_of_a_folder_and_nothing_else(tmp_path: Path) -> None:
    # sd-scripts writes its caches beside the images: the run's copy of the dataset holds images, captions, a marker
    first = Reuse(tmp_path / "run1" / "data", key("k", 1), "latents", "*_sd.npz")
    first.local.mkdir(parents=True)
    for name in ("a.png", "a.txt", ".loraforge-run-copy", "a_0064x0064_sd.npz", "a_sd3_te.npz"):
        (first.local / name).write_bytes(name.encode())
    assert harvest(first) == 1
    assert [p.name for p in first.shared.iterdir()] == ["a_0064x0064_sd.npz"]  # no image or caption in the cache
    (first.shared / "stray.png").write_bytes(b"not a cache file")
    second = Reuse(tmp_path / "run2" / "data", first.key, "latents", "*_sd.npz")
    second.local.mkdir(parents=True)
    (second.local / "a.png").write_bytes(b"another image")
    assert seed(second) == 1
    assert sorted(p.name for p in second.local.iterdir()) == ["a.png", "a_0064x0064_sd.npz"]
    assert (second.local / "a.png").read_bytes() == b"another image"  # the run's own files untouched
