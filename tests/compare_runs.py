"""Helpers for the compare tests: real run folders built from events, and reading a report.html back."""

from __future__ import annotations

import base64
import io
import json
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from safetensors.numpy import save_file

from orchestrator.events import Event, EventLog, read_events
from orchestrator.job import build_job
from orchestrator.runs import RunDir, create_run


def make_job_data(tmp: Path, name: str = "cmp", **overrides: Any) -> dict[str, Any]:
    dataset = tmp / "dataset"
    dataset.mkdir(exist_ok=True)
    data: dict[str, Any] = {
        "name": name,
        "base_model": str(tmp / "base"),
        "family": "sdxl",
        "trigger": "ohwx person",
        "dataset": str(dataset),
        "training": {"steps": 6, "learning_rate": 1e-4},
        "network": {"rank": 4},
        "output": {"dir": str(tmp / "runs")},
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[key] = value
    return data


def make_run(
    tmp: Path,
    backend: str,
    events: list[Event],
    *,
    name: str = "cmp",
    rank: int = 4,
    status: str = "finished",
    metrics: dict[str, Any] | None = None,
    samples: list[tuple[str, int, bool]] | None = None,
    lora_layout: str = "kohya",
) -> RunDir:
    """A run folder as `run_training` leaves it: job.yaml, run.json, events.jsonl, output/<name>.safetensors."""
    job = build_job(make_job_data(tmp, name, network__rank=rank))
    run = create_run(job, backend, root=tmp / "runs")
    log = EventLog(run.events_file)
    for event in events:
        log.write(event)
    log.close()
    if status == "finished":
        write_lora(run.output / f"{job.lora_name}.safetensors", rank, lora_layout)
    run.update_state(status=status, seconds=12.5)
    if metrics is not None:
        (run.path / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    if samples is not None:
        folder = run.path / "samples"
        folder.mkdir()
        rows = []
        for i, (prompt, seed, trigger) in enumerate(samples):
            path = folder / f"{i}.png"
            image = Image.new("RGB", (64, 64), (40 * i % 255, 120, 200 - 30 * i % 200))
            ImageDraw.Draw(image).ellipse((8, 8, 56, 56), fill=(250, 200, 40))
            image.save(path)
            rows.append({"prompt": prompt, "seed": seed, "trigger": trigger, "path": path.name})
        (folder / "samples.json").write_text(json.dumps({"images": rows, "note": None}), encoding="utf-8")
    return run


def real_env(backend: str) -> tuple[Any, str | None]:
    """The machine's registered environment of ``backend`` (read before test isolation) and, when it cannot be
    used, why not: (env, None) or (None, reason)."""
    import pytest
    from conftest import _REAL_HOME

    from backends import base
    from orchestrator.envs import load_registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAFORGE_HOME", str(_REAL_HOME))
        env = load_registry().get(backend)
    if env is None or not env.python.exists():
        return None, f"{backend} is not set up on this machine"
    problems = base.get(backend).check(env)
    return (None, problems[0].message) if problems else (env, None)


def child_env(home: Path) -> dict[str, str]:
    """The environment of a `loraforge` child run under ``home``: its own registry and caches, offline, no colour."""
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        LORAFORGE_HOME=str(home / "loraforge"),
        XDG_CACHE_HOME=str(home / ".cache"),
        NO_COLOR="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return env


def write_lora(path: Path, rank: int, layout: str = "kohya", modules: int = 3) -> None:
    rng = np.random.default_rng(0)
    tensors: dict[str, np.ndarray] = {}
    for i in range(modules):
        if layout == "kohya":
            stem = f"lora_unet_down_blocks_0_attentions_0_to_q_{i}"
            tensors[f"{stem}.lora_down.weight"] = rng.standard_normal((rank, 32)).astype(np.float16)
            tensors[f"{stem}.lora_up.weight"] = np.zeros((32, rank), np.float16)
            tensors[f"{stem}.alpha"] = np.array(float(rank), np.float16)
        else:
            stem = f"unet.down_blocks.0.attentions.0.to_q_{i}"
            tensors[f"{stem}.lora_A.weight"] = rng.standard_normal((rank, 32)).astype(np.float32)
            tensors[f"{stem}.lora_B.weight"] = np.zeros((32, rank), np.float32)
    save_file(tensors, str(path), metadata={"ss_network_dim": str(rank)})


def final_loss_in(events_file: Path) -> float | None:
    """The last loss in events.jsonl, read independently of the report code."""
    last = None
    for line in events_file.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("event") == "progress" and row.get("loss") is not None:
            last = row["loss"]
    return last


def events_of(run: RunDir) -> list[Event]:
    return read_events(run.events_file)


class ReportPage(HTMLParser):
    """What a reader of report.html sees, pulled out of the markup: summary rows, images, lists, link targets."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, Any]] = {}
        self.images: list[dict[str, str]] = []
        self.not_equivalent: list[str] = []
        self.external: list[str] = []
        self.ids: set[str] = set()
        self._row: str | None = None
        self._cells: list[str] = []
        self._in_neq = False
        self._li: list[str] | None = None
        self._text: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("src", "href"):
            if key in a and not a[key].startswith(("data:", "#")):
                self.external.append(a[key])
        if tag == "tr" and "data-arm" in a:
            self._row = a["data-arm"]
            self.rows[self._row] = {"status": a.get("data-status"), "cells": []}
        elif tag == "td" and self._row is not None:
            if "data-final-loss" in a:
                self.rows[self._row]["final_loss"] = json.loads(a["data-final-loss"])
            self._text = []
        elif tag == "img":
            self.images.append(a)
        elif tag == "ul" and a.get("id") == "not-equivalent":
            self._in_neq = True
        elif tag == "li" and self._in_neq:
            self._li = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._text is not None:
            self.rows[self._row]["cells"].append("".join(self._text).strip())
            self._text = None
        elif tag == "tr":
            self._row = None
        elif tag == "li" and self._li is not None:
            self.not_equivalent.append("".join(self._li).strip())
            self._li = None
        elif tag == "ul":
            self._in_neq = False

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)
        if self._li is not None:
            self._li.append(data)

    def image(self, element_id: str) -> Image.Image | None:
        for img in self.images:
            if img.get("id") == element_id:
                return decode_data_uri(img["src"])
        return None


def decode_data_uri(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,"), uri[:40]
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    image.load()
    return image


def pixel_spread(image: Image.Image) -> float:
    """Standard deviation of the greyscale pixels: 0 for a blank image."""
    return float(np.asarray(image.convert("L"), dtype=np.float64).std())


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html: Path, out: Path, work: Path, size: str = "1280,2000") -> Image.Image:
    """Open ``html`` in headless Chromium (fresh profile, no network) and return its screenshot."""
    import subprocess

    browser = chromium()
    assert browser is not None
    profile = work / "chromium-profile"
    result = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={size}",
            html.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.exists(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    image = Image.open(out)
    image.load()
    return image


def looks_drawn(image: Image.Image) -> bool:
    """Not blank: the pixels vary, and a good share of the page is not background white."""
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    return grey.std() > 10 and (grey < 200).mean() > 0.02


def has_colour(image: Image.Image, rgb: tuple[int, int, int]) -> bool:
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    return bool((pixels == np.array(rgb)).all(axis=1).any())
