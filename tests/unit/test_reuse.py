"""Caches reused between runs (orchestrator/reuse.py): seeded by link, harvested by atomic rename, keyed by what
their content depends on."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

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


def _safetensors(path: Path) -> None:
    import struct

    raw = json.dumps({"weight": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def _kohya_reuse(tmp_path: Path, model: Path, data: Path, family: str, **job: Any) -> dict[str, Reuse]:
    training = {"steps": 2, "resolution": 64, **job.pop("training", {})}
    versions = {"sd-scripts": "48d368fa5577", "torch": "2.13.0", **job.pop("versions", {})}
    spec = build_job({"name": "k", "base_model": str(model), "family": family, "dataset": str(data),
                      "training": training, "output": {"dir": str(tmp_path / "runs")}, **job})  # fmt: skip
    env = BackendEnv("kohya", Path(sys.executable), root=Path("/opt/sd-scripts"), device="cpu", versions=versions)
    run = create_run(spec, "kohya")
    rendered = base.get("kohya").render(spec, load_dataset(data), run, env)
    assert all(r.local == run.data for r in rendered.reuse)  # the run's copy of the dataset: where sd-scripts writes
    return {r.what: r for r in rendered.reuse}


def test_kohya_latents_keys_follow_what_the_latents_depend_on(tmp_path: Path) -> None:
    from orchestrator.tiny.dataset import make_dataset

    data = make_dataset(tmp_path / "data", count=2, size=64)
    model = tmp_path / "sd15"
    _safetensors(model / "unet" / "diffusion_pytorch_model.safetensors")

    def latents(**job: Any) -> str | None:
        found = _kohya_reuse(tmp_path, model, data, "sd15", **job)
        assert "text-encoder outputs" not in found  # sd-scripts caches no SD 1.5 text-encoder outputs
        return found["latents"].key if "latents" in found else None

    first = _kohya_reuse(tmp_path, model, data, "sd15")["latents"]
    assert first.files == "*_sd.npz"  # <stem>_<W>x<H>_sd.npz (library/strategy_sd.py)
    same = [
        latents(),  # another run of the same job
        latents(training={"learning_rate": 1e-3, "batch_size": 2, "repeats": 3, "steps": 7}),
        latents(network={"rank": 8}),
    ]
    assert same == [first.key] * 3
    caption = next(data.glob("*.txt"))
    caption.write_text(caption.read_text() + ", smiling")
    assert latents() == first.key  # a caption changes no latent
    changed = [
        latents(training={"resolution": 128}),  # another bucket: sd-scripts would load the old latents as they are
        latents(training={"seed": 7}),  # the VAE samples each latent
        latents(backend_args={"kohya": {"flip_aug": True}}),
        latents(versions={"sd-scripts": "0123456789ab"}),
        latents(versions={"diffusers": "0.99"}),
    ]
    assert None not in changed and len({first.key, *changed}) == 1 + len(changed)
    assert latents(training={"cache_latents": False}) is None  # cached in memory, or not at all: nothing to reuse
    assert latents(backend_args={"kohya": {"cache_latents_to_disk": False}}) is None
    image = next(data.glob("*.png"))
    image.write_bytes(image.read_bytes() + b"\0")  # an image changed
    assert latents() not in (first.key, None)
    _safetensors(model / "vae" / "diffusion_pytorch_model.safetensors")  # the model changed
    before = latents()
    (model / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"another vae")
    assert latents() != before


def test_kohya_text_encoder_outputs_keys_follow_the_captions(tmp_path: Path) -> None:
    from orchestrator.tiny.dataset import make_dataset

    data = make_dataset(tmp_path / "data", count=2, size=64)
    model = tmp_path / "tiny-sd3"
    (model / "kohya").mkdir(parents=True)
    (model / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    for name in ("sd3", "clip_l", "clip_g", "t5xxl", "vae"):
        _safetensors(model / "kohya" / f"{name}.safetensors")
    for entry in ("openai_clip-vit-large-patch14", "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k", "google_t5-v1_1-xxl"):
        (model / "kohya" / "tokenizers" / entry).mkdir(parents=True)
        (model / "kohya" / "tokenizers" / entry / "tokenizer_config.json").write_text("{}")

    def keys(**job: Any) -> dict[str, str]:
        return {what: r.key for what, r in _kohya_reuse(tmp_path, model, data, "sd3", **job).items()}

    first = _kohya_reuse(tmp_path, model, data, "sd3")
    assert {r.files for r in first.values()} == {"*_sd3.npz", "*_sd3_te.npz"}  # never each other's files
    text, latents = first["text-encoder outputs"].key, first["latents"].key
    assert keys(training={"resolution": 128})["text-encoder outputs"] == text  # an image's size changes no caption
    assert keys(training={"resolution": 128})["latents"] != latents
    assert keys(backend_args={"kohya": {"t5xxl_max_token_length": 77}})["text-encoder outputs"] != text
    assert "text-encoder outputs" not in keys(training={"shuffle_captions": True})  # sd-scripts caches none then
    caption = next(data.glob("*.txt"))
    caption.write_text(caption.read_text() + ", smiling")
    assert keys() == {"text-encoder outputs": keys()["text-encoder outputs"], "latents": latents}
    assert keys()["text-encoder outputs"] != text
