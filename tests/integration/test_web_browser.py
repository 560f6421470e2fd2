"""The web app as a person uses it, in real headless Chromium (Debian's package, driven by Playwright's driver):
photos dropped and picked -> the prep report -> a caption edited -> a SimpleTuner job on the tiny SDXL started ->
the step counter and the loss chart advance without a reload -> the LoRA downloaded and read by `loraforge inspect`.
A screenshot of each main page is kept (paths printed; also copied to $LORAFORGE_TEST_ARTIFACTS when set)."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from compare_runs import make_run
from PIL import Image
from web_helpers import CHROMIUM_ARGS, ServeProcess, artifact, chromium, free_port, keep_artifact

from orchestrator.events import Finished, Progress

pytestmark = pytest.mark.integration

SETUP = "`loraforge setup simpletuner` (or `loraforge setup simpletuner --venv EXISTING_VENV`)"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def st_env(real_registry: Path):  # type: ignore[no-untyped-def]
    from backends.simpletuner import SimpleTunerBackend
    from orchestrator.envs import load_registry

    env = load_registry().get("simpletuner")
    if env is None or not env.python.exists():
        pytest.skip(f"SimpleTuner is not set up on this machine: run {SETUP}")
    problems = SimpleTunerBackend().check(env)
    if problems:
        pytest.skip(f"SimpleTuner environment not usable ({problems[0].message}): run {SETUP}")
    return env


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    executable = chromium()
    if executable is None:
        pytest.skip("headless Chromium not installed: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' (Playwright's driver)")
    # Playwright's expect() polls without eval: the app's Content-Security-Policy (no eval) stays on in the test
    with sync_api.sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chrome
        chrome.close()


def skimage_photos(folder: Path) -> list[Path]:
    data = pytest.importorskip("skimage.data")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"):
        path = folder / f"{name}.jpg"
        Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB").save(path, quality=92)
        paths.append(path)
    return paths


def shot(page, tmp_path: Path, name: str) -> Path:  # type: ignore[no-untyped-def]
    path = artifact(tmp_path, name)
    page.screenshot(path=str(path), full_page=True)
    keep_artifact(path)
    return path


DROP_ZIP = """([name, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type: "application/zip" }));
  document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true }));
}"""


def test_photos_to_a_lora_in_the_browser(st_env, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    from orchestrator.tiny import tiny_sdxl

    model = tiny_sdxl(st_env.python, root=tmp_path / "tiny")
    photos = skimage_photos(tmp_path / "photos")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in photos[3:]:
            zf.write(path, f"more/{path.name}")
    runs = tmp_path / "runs"
    server = ServeProcess(runs, free_port(), "--gpus", "none")
    url = server.start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)

        # 1. photos: three picked, a zip of two dropped
        page.goto(url + "new")
        page.set_input_files("#files", [str(p) for p in photos[:3]])
        expect(page.locator("#uploaded li.ok")).to_have_count(3)
        page.evaluate(DROP_ZIP, ["more.zip", base64.b64encode(archive.getvalue()).decode()])
        expect(page.locator("#uploaded li.ok")).to_have_count(4)
        page.select_option("#subject", "object")
        page.fill("#size", "256")
        page.select_option("#crop", "center")
        page.click("#prep")
        # 2. the prep report: a verdict per photo and the crops as they will train
        page.wait_for_selector("#report figure.accepted", timeout=120_000)
        assert page.locator("#report figure.accepted").count() == 5
        assert page.locator("#report figure.accepted img").first.evaluate("i => i.complete && i.naturalWidth") == 256
        shot(page, tmp_path, "web-new-prep.png")

        # 3. captions: written from a template with the trigger, one edited in the page
        page.fill("#trigger", "ohwx")
        page.select_option("#captioner", "template")
        page.click("#autocaption")
        expect(page.locator("#captions textarea")).to_have_count(5)
        first = page.locator("#captions textarea").first
        expect(first).to_have_value("photo of ohwx")
        image = first.get_attribute("data-image")
        first.fill("ohwx, an astronaut in a white suit, studio photo")
        page.click("#save-captions")
        expect(page.locator("#captions-saved")).to_contain_text("1 changed")

        # 4. the step plan, then start
        page.fill("#name", "webtiny")
        page.fill("#base_model", str(model))
        page.select_option("#backend", "simpletuner")
        page.fill("#steps", "6")
        page.fill("#rank", "4")
        page.fill(
            "#set",
            "training.resolution=128\ntraining.precision=fp32\ntraining.gradient_checkpointing=false\n"
            "training.warmup_steps=0\nsaving.every_n_steps=3",
        )
        page.click("#plan")
        page.wait_for_selector("#plan-text:not([hidden])")
        assert page.inner_text("#plan-text").startswith("step plan (simpletuner): 5 images")
        assert "steps: 6" in (page.text_content("#plan-job pre") or "")
        shot(page, tmp_path, "web-new-plan.png")
        page.click("#start")

        # 5. the run page, live: the step counter and the chart move with no reload
        page.wait_for_url(re.compile(r".*/runs/webtiny-.*"), timeout=120_000)
        run_name = page.url.rstrip("/").split("/")[-1]
        page.evaluate("window.__sameDocument = true")
        steps, points = [], []
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            text = page.inner_text("#step")
            if "/" in text and (not steps or steps[-1] != text):
                steps.append(text)
                points.append(int(page.get_attribute("#chart", "data-points") or 0))
            if text == "6/6" and page.inner_text("#status") == "finished":
                break
            page.wait_for_timeout(100)
        assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
        assert steps[-1] == "6/6", (steps, server.output[-20:])
        assert len(steps) >= 3 and [int(s.split("/")[0]) for s in steps] == sorted(int(s.split("/")[0]) for s in steps)
        assert points[-1] == 6 and points[0] < points[-1], points
        page.wait_for_selector("a.download")
        shot(page, tmp_path, "web-run.png")
        assert not errors, errors

        # 6. the LoRA downloads, and `loraforge inspect` reads it
        with page.expect_download() as download:
            page.click("a.download")
        lora = tmp_path / "downloaded.safetensors"
        download.value.save_as(str(lora))
        assert lora.read_bytes() == (runs / run_name / "output" / "webtiny.safetensors").read_bytes()
        inspected = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "inspect", str(lora), "--json"],
            capture_output=True, text=True, cwd=REPO, check=True,
        )  # fmt: skip
        info = json.loads(inspected.stdout)
        assert (info["family"], info["rank"], info["trigger"]) == ("sdxl", 4, "ohwx")
        # the caption edited in the page is what the run trained on (its own copy of the dataset)
        trained = (runs / run_name / "data").rglob(Path(image).stem + ".txt")
        assert [p.read_text().strip() for p in trained] == ["ohwx, an astronaut in a white suit, studio photo"]
        # one truth: the CLI reads the run the app started
        shown = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "runs", "--root", str(runs), "--json"],
            capture_output=True, text=True, cwd=REPO, check=True,
        )  # fmt: skip
        assert run_name in shown.stdout

        # 7. the runs list and compare (against a run made outside the app: it shows up as well)
        other = make_run(tmp_path, "kohya", [*(Progress(s, 6, loss=0.3 / s) for s in range(1, 7)), Finished(None, 3)])
        page.goto(url)
        page.wait_for_selector(f"tr[data-name='{other.path.name}']")
        assert "finished" in page.inner_text(f"tr[data-name='{run_name}']")
        page.check(f"tr[data-name='{run_name}'] input.pick")
        page.check(f"tr[data-name='{other.path.name}'] input.pick")
        shot(page, tmp_path, "web-runs.png")
        page.click("#compare")
        expect(page.locator("#summary tbody tr")).to_have_count(2)
        expect(page.locator("#chart")).to_have_attribute("data-points", "12")
        assert "training.resolution\t128\t1024" in page.inner_text("#differ")
        assert "simpletuner" in page.inner_text("#summary") and "kohya" in page.inner_text("#summary")
        shot(page, tmp_path, "web-compare.png")
        assert not errors, errors
    finally:
        server.stop()


def test_the_run_page_shows_validation_overfitting_samples_and_the_failure(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Everything a run page draws that a CPU run of the tiny model does not produce (validation loss, the
    overfitting turn, sample images, a failure), from a run folder written the way a run writes it."""
    from playwright.sync_api import expect

    from orchestrator.events import Checkpoint, Failure, Phase, Sample, Validation

    events: list = [Phase("setup"), Phase("loading"), Phase("training")]
    samples = []
    for step in range(1, 31):
        events.append(
            Progress(step, 40, epoch=1, epochs=2, loss=0.5 * 0.97**step, it_per_s=1.2, eta_s=(40 - step) / 1.2)
        )
        if step % 10 == 0:
            events += [Checkpoint(f"CKPT{step}", step), Validation(step, {10: 0.50, 20: 0.45, 30: 0.55}[step])]
            for prompt in ("ohwx person riding a bicycle", "ohwx person in a spacesuit"):
                samples.append((prompt, step))
                events.append(Sample(f"SAMPLE{len(samples)}", step, prompt))
    events.append(Failure("out_of_memory", "CUDA out of memory", "lower training.batch_size", ["line one", "line two"]))
    run = make_run(tmp_path, "kohya", events, name="features", status="failed")
    (run.output / "samples").mkdir()
    text = run.events_file.read_text()
    for index in range(1, len(samples) + 1):  # the paths the trainer would have written
        image = run.output / "samples" / f"{index}.png"
        Image.new("RGB", (96, 96), (30 * index % 255, 90, 160)).save(image)
        text = text.replace(f'"SAMPLE{index}"', json.dumps(str(image)))
    for step in (10, 20, 30):
        text = text.replace(f'"CKPT{step}"', json.dumps(str(run.output / f"features-{step:06d}.safetensors")))
        (run.output / f"features-{step:06d}.safetensors").write_bytes(b"x")
    run.events_file.write_text(text)

    server = ServeProcess(tmp_path / "runs", free_port(), "--gpus", "none")
    url = server.start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}runs/{run.path.name}")
        expect(page.locator("#chart")).to_have_attribute("data-points", "30")
        expect(page.locator("#overfit")).to_contain_text("rose at step 30")
        expect(page.locator("#overfit")).to_contain_text("step 20 may generalise better")
        expect(page.locator("#samples img")).to_have_count(6)
        page.wait_for_load_state("networkidle")
        assert all(page.locator("#samples img").evaluate_all("imgs => imgs.map(i => i.naturalWidth === 96)"))
        assert page.locator("#samples th").all_inner_texts() == ["prompt", "step 10", "step 20", "step 30"]
        expect(page.locator("#failure")).to_contain_text("out_of_memory: CUDA out of memory")
        expect(page.locator("#failure")).to_contain_text("line two")
        expect(page.locator("#phases li.failed")).to_have_text("training")
        expect(page.locator("#checkpoints tbody tr")).to_have_count(3)
        expect(page.locator("#checkpoints td.warn")).to_have_text("0.5500")
        expect(page.locator("#actions button")).to_have_text(["Resume", "Retry"])
        assert page.inner_text("#step") == "30/40" and page.inner_text("#epoch") == "1/2"
        page.check("#logscale")
        shot(page, tmp_path, "web-run-features.png")
        assert not errors, errors
    finally:
        server.stop()
