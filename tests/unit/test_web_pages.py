"""The app's pages and API over real HTTP, on run folders built the way a run leaves them: the runs list, a run's
detail, downloads, the log tail, compare; and a new LoRA from photos up to the queued job (prep, captions, the step
plan: the CLI's own calls)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from compare_runs import make_run
from PIL import Image
from web_helpers import call, fake_worker, running_app, wait_for

from orchestrator.events import Checkpoint, Failure, Finished, Log, Phase, Progress, Validation

SKIMAGE = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def photo_bytes(name: str) -> bytes:
    data = pytest.importorskip("skimage.data")
    array = getattr(data, name)()
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array)).convert("RGB").save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def curve(steps: int, total: int) -> list:
    return [Progress(s, total, loss=0.4 * 0.97**s, it_per_s=1.5, eta_s=(total - s) / 1.5) for s in range(1, steps + 1)]


def test_runs_list_detail_downloads_and_log(tmp_path: Path) -> None:
    events = [Phase("setup"), Phase("training"), *curve(20, 20), Validation(10, 0.30), Validation(20, 0.35)]
    events.insert(12, Checkpoint("", 10))
    events += [Finished(None, 12.0)]
    done = make_run(tmp_path, "kohya", events, name="done", rank=8)
    failed = make_run(
        tmp_path,
        "simpletuner",
        [*curve(3, 50), Failure("out_of_memory", "CUDA out of memory", "lower the batch size")],
        name="broke",
        status="failed",
    )
    (done.logs / "stderr.log").write_bytes(
        b"loading\n\x1b[32mstep 1\x1b[0m\r 10%|#  | 1/10\r \x1b[1m20%\x1b[0m|## | 2/10\nbye\n"
    )
    (done.rendered / "config.toml").write_text('output_name = "done"\n')
    with running_app(tmp_path / "runs", gpus=[]) as app:
        page = call(app, "GET", "/")
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        assert done.path.name in page.text and failed.path.name in page.text  # drawn at the first byte, no script
        rows = {r["name"]: r for r in call(app, "GET", "/api/runs").json()["runs"]}
        row = rows[done.path.name]
        assert (row["backend"], row["family"], row["status"], row["step"], row["total"]) == (
            "kohya",
            "sdxl",
            "finished",
            20,
            20,
        )
        assert row["loss"] == pytest.approx(0.4 * 0.97**20) and row["it_per_s"] == 1.5 and row["eta_s"] == 0
        assert rows[failed.path.name]["failure"] == "out_of_memory: CUDA out of memory"

        detail = call(app, "GET", f"/api/runs/{done.path.name}").json()
        assert detail["loras"] == ["output/done.safetensors"]
        assert [c["step"] for c in detail["checkpoints"]] == [10]
        assert detail["rendered"] == [{"path": "rendered/config.toml", "size": 21}]
        assert yaml.safe_load(detail["job_yaml"])["network"]["rank"] == 8
        lora = call(app, "GET", f"/runs/{done.path.name}/files/output/done.safetensors?download=1")
        assert lora.status == 200 and lora.body == (done.output / "done.safetensors").read_bytes()
        assert lora.headers["content-disposition"] == "attachment; filename*=UTF-8''done.safetensors"
        config = call(app, "GET", f"/runs/{done.path.name}/files/rendered/config.toml")
        assert config.headers["content-type"] == "text/plain; charset=utf-8"  # never served as a page
        assert call(app, "GET", f"/api/runs/{done.path.name}/log?lines=10").json()["lines"] == [
            "loading",
            " 20%|## | 2/10",
            "bye",
        ]  # a bar redrawn on one line shows its last drawing, colours gone
        for page in (f"/runs/{done.path.name}", "/new", f"/compare?run={done.path.name}&run={failed.path.name}"):
            reply = call(app, "GET", page)
            assert reply.status == 200 and '<script src="/static/' in reply.text, page
        for asset in ("common.js", "chart.js", "run.js", "runs.js", "new.js", "compare.js", "job.js", "app.css"):
            reply = call(app, "GET", f"/static/{asset}")
            assert reply.status == 200 and reply.headers["content-type"].split(";")[0] in (
                "text/javascript",
                "text/css",
            )
        assert call(app, "GET", "/api/runs/nope").status == 404


def test_compare_shows_the_report_content(tmp_path: Path) -> None:
    a = make_run(tmp_path, "kohya", [*curve(10, 10), Finished(None, 5.0)], name="a", rank=4)
    b = make_run(tmp_path, "simpletuner", [*curve(10, 10), Finished(None, 6.0)], name="b", rank=8)
    with running_app(tmp_path / "runs", gpus=[]) as app:
        report = call(app, "GET", f"/api/compare?run={a.path.name}&run={b.path.name}").json()
        assert call(app, "GET", f"/api/compare?run={a.path.name}").status == 400
    assert [arm["run"] for arm in report["arms"]] == [a.path.name, b.path.name]
    assert [arm["backend"] for arm in report["arms"]] == ["kohya", "simpletuner"]
    assert [len(arm["loss_curve"]) for arm in report["arms"]] == [10, 10]
    assert [arm["lora"]["rank"] for arm in report["arms"]] == [4, 8]
    assert report["differing_settings"]["network.rank"] == {a.path.name: 4, b.path.name: 8}
    assert all(arm["run_dir"] is None for arm in report["arms"])  # server paths stay on the server


def test_a_new_lora_from_photos_to_the_queue(tmp_path: Path) -> None:
    with running_app(tmp_path / "runs", gpus=[], worker=fake_worker(tmp_path)) as app:
        draft = call(app, "POST", "/api/drafts").json()["id"]
        for name in SKIMAGE[:3]:
            assert call(app, "PUT", f"/api/drafts/{draft}/files/{name}.jpg", photo_bytes(name)).status == 201
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            for name in SKIMAGE[3:]:
                zf.writestr(f"more/{name}.jpg", photo_bytes(name))
            zf.writestr("more/notes.pdf", b"%PDF-1.4")
        kept = call(app, "PUT", f"/api/drafts/{draft}/files/extra.zip", archive.getvalue()).json()
        assert kept["kind"] == "zip" and len(kept["files"]) == 3

        report = call(
            app, "POST", f"/api/drafts/{draft}/prep", {"subject": "object", "size": 256, "crop": "center"}
        ).json()
        verdicts = {e["source"]: e["verdict"] for e in report["entries"]}
        assert report["accepted"] == 5 and verdicts["extra/more/notes.pdf"] == "rejected"
        crop = next(e for e in report["entries"] if e["verdict"] == "accepted")
        image = call(app, "GET", f"/drafts/{draft}/files/dataset/{crop['output']}")
        assert image.status == 200 and Image.open(io.BytesIO(image.body)).size == (256, 256)

        captions = call(
            app,
            "POST",
            f"/api/drafts/{draft}/captions/auto",
            {"captioner": "template", "trigger": "ohwx", "template": "photo of {trigger}"},
        ).json()
        assert len(captions) == 5 and all(c["caption"] == "photo of ohwx" for c in captions)
        first = captions[0]["image"]
        changed = call(
            app,
            "PUT",
            f"/api/drafts/{draft}/captions",
            {first: "ohwx, a photo\nof a thing", captions[1]["image"]: captions[1]["caption"]},
        ).json()
        assert changed == {"changed": [first]}
        dataset = app.drafts.dataset(draft)
        assert (dataset / first).with_suffix(".txt").read_text().strip() == "ohwx, a photo of a thing"
        assert call(app, "PUT", f"/api/drafts/{draft}/captions", {"../../x.jpg": "no"}).status == 400

        form = {
            "name": "thing",
            "subject": "object",
            "trigger": "ohwx",
            "base_model": "stabilityai/stable-diffusion-xl-base-1.0",
            "backend": "simpletuner",
            "steps": 12,
            "rank": 4,
            "set": "training.resolution=256\nsaving.every_n_steps=6",
        }
        plan = call(app, "POST", f"/api/drafts/{draft}/plan", form).json()
        assert plan["plan"].startswith("step plan (simpletuner): 5 images") and plan["steps"] == 12
        job = yaml.safe_load(plan["job"])
        assert (
            job["family"],
            job["network"]["rank"],
            job["training"]["resolution"],
            job["saving"]["every_n_steps"],
        ) == ("sdxl", 4, 256, 6)
        assert job["dataset"] == str(dataset) and job["output"]["dir"] == str(app.runs_root)
        wrong = call(app, "POST", f"/api/drafts/{draft}/plan", {**form, "trigger": "zzkw"}).json()
        assert "lack the trigger 'zzkw'" in wrong["error"]  # preflight's own check, its own words
        bad = call(app, "POST", f"/api/drafts/{draft}/plan", {**form, "set": "network.rank=0"}).json()
        assert "network.rank" in bad["error"]

        queued = call(app, "POST", f"/api/drafts/{draft}/start", form)
        assert queued.status == 201
        job_id = queued.json()["id"]
        assert (Path(queued.json()["folder"]) / "job.yaml").read_text() == plan["job"]
        assert call(app, "GET", f"/jobs/{job_id}").status == 200
        done = wait_for(
            lambda: (
                call(app, "GET", f"/api/jobs/{job_id}").json()["status"] == "finished"
                and call(app, "GET", f"/api/jobs/{job_id}").json()
            ),
            what="the job",
        )
        assert done["run_name"].startswith("thing-")
        row = next(r for r in call(app, "GET", "/api/runs").json()["runs"] if r["name"] == done["run_name"])
        assert row["job"] == job_id and row["step"] == 12


def test_start_refuses_what_the_plan_refuses(tmp_path: Path) -> None:
    make_run(tmp_path, "kohya", [Log("info", "x")])
    with running_app(tmp_path / "runs", gpus=[]) as app:
        draft = call(app, "POST", "/api/drafts").json()["id"]
        assert (
            call(app, "POST", f"/api/drafts/{draft}/prep", {"subject": "object"})
            .json()["error"]
            .startswith("no photos")
        )
        assert "not prepared" in call(app, "POST", f"/api/drafts/{draft}/plan", {}).json()["error"]
        assert call(app, "POST", f"/api/drafts/{draft}/start", {}).status == 400
        assert app.store.jobs() == []
