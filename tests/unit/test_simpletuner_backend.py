"""SimpleTuner rendering, option mapping, refusals, environment checks and collection (no trainer launched)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends.base import Resume
from backends.simpletuner import LINKED_MARKER, SimpleTunerBackend, link_dataset
from orchestrator.envs import BackendEnv, find_python
from orchestrator.errors import BackendNotReady, LoraforgeError
from orchestrator.job import JobSpec, build_job, dump_job
from orchestrator.tiny.dataset import make_dataset


def make_job(tmp_path: Path, **training: object) -> JobSpec:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    data = make_dataset(tmp_path / "data", count=3, size=64)
    settings = {"steps": 6, "resolution": 128, "seed": 42, "gradient_checkpointing": False, **training}
    return build_job(
        {
            "name": "tiny",
            "base_model": str(model),
            "family": "sdxl",
            "dataset": str(data),
            "network": {"rank": 4},
            "training": settings,
            "saving": {"every_n_steps": 3, "keep_last": 5},
        }
    )


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAFORGE_SIMPLETUNER_DEVICE", "cpu")


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAFORGE_SIMPLETUNER_DEVICE", "cuda")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_render_matches_the_verified_cpu_config(fixtures_dir: Path, tmp_path: Path, cpu: None) -> None:
    """The options that ran for real (fixtures config.run1.json) come out of an equivalent JobSpec unchanged."""
    job = make_job(tmp_path, precision="fp32")
    rendered = SimpleTunerBackend().render(job, tmp_path / "run" / "rendered")
    config = json.loads(rendered.files["config"].read_text())
    verified = json.loads((fixtures_dir / "logs/simpletuner/config.run1.json").read_text())
    paths = {"pretrained_model_name_or_path", "data_backend_config", "pretrained_vae_model_name_or_path", "output_dir"}
    for key, value in verified.items():
        if key in paths:
            assert key in config, key
        elif key != "vae_batch_size":  # a throughput knob, left at SimpleTuner's default
            assert config[key] == value, key
    assert config["pretrained_vae_model_name_or_path"] == job.base_model  # local VAE: the default is a hub id
    assert config["output_dir"] == str(tmp_path / "run" / "output" / "simpletuner")
    assert rendered.values == config


def test_datasets_match_the_verified_backend(fixtures_dir: Path, tmp_path: Path, cpu: None) -> None:
    job = make_job(tmp_path)
    rendered = SimpleTunerBackend().render(job, tmp_path / "run" / "rendered")
    ours = json.loads(rendered.files["multidatabackend"].read_text())
    verified = json.loads((fixtures_dir / "logs/simpletuner/multidatabackend.json").read_text())
    for mine, theirs in zip(ours, verified, strict=True):
        for key, value in theirs.items():
            if key not in ("id", "instance_data_dir", "cache_dir_vae", "cache_dir"):
                assert mine[key] == value, key
    data = Path(ours[0]["instance_data_dir"])
    assert data == tmp_path / "run" / "data"  # the run's own folder: SimpleTuner's bucket cache lands there
    assert sorted(p.name for p in data.iterdir() if p.name != LINKED_MARKER) == sorted(
        p.name for p in Path(job.dataset).iterdir()
    )


def test_resume_and_webhooks_as_in_the_verified_resume_run(fixtures_dir: Path, tmp_path: Path, cpu: None) -> None:
    job = make_job(tmp_path)
    backend = SimpleTunerBackend()
    out = tmp_path / "run" / "output" / "simpletuner"
    (out / "checkpoint-3").mkdir(parents=True)
    with backend.open_channel(lambda event: None):
        rendered = backend.render(job, tmp_path / "run" / "rendered", resume=Resume(out / "checkpoint-3", 3))
        launch = backend.command(job, rendered, BackendEnv("simpletuner", Path(sys.executable)))
    config = json.loads(rendered.files["config"].read_text())
    assert config["resume_from_checkpoint"] == "checkpoint-3"  # SimpleTuner looks it up inside output_dir
    hooks = json.loads(Path(config["webhook_config"]).read_text())
    verified = json.loads((fixtures_dir / "logs/simpletuner/webhooks.json").read_text())
    assert hooks[0]["webhook_type"] == verified[0]["webhook_type"] == "raw"
    assert hooks[0]["callback_url"].startswith("http://127.0.0.1:") and hooks[0]["callback_url"].endswith("/hook")
    assert launch.env["SIMPLETUNER_JOB_ID"].startswith("lf-")
    assert launch.env["CONFIG_BACKEND"] == "json" and launch.env["CONFIG_PATH"] == str(rendered.files["config"])
    assert launch.env["SIMPLETUNER_DISABLE_COLORS"] == "1"
    assert launch.argv[-2:] == ["-m", "simpletuner.train"] and launch.argv[0] == "env"
    assert f"CONFIG_PATH={rendered.files['config']}" in launch.argv  # the printed command runs as it is
    assert "resume_from_checkpoint" in json.loads((fixtures_dir / "logs/simpletuner/config.run2.json").read_text())


def test_cpu_settings_are_not_forced_on_gpu(tmp_path: Path, gpu: None) -> None:
    job = make_job(tmp_path, precision="bf16")
    job = job.model_copy(update={"sampling": job.sampling.model_copy(update={"every_n_steps": 3, "prompts": ["x"]})})
    rendered = SimpleTunerBackend().render(job, tmp_path / "run" / "rendered")
    config = json.loads(rendered.files["config"].read_text())
    datasets = json.loads(rendered.files["multidatabackend"].read_text())
    assert config["optimizer"] == "adamw_bf16" and config["mixed_precision"] == "bf16"
    assert "pretrained_vae_model_name_or_path" not in config and "validation_disable" not in config
    assert config["validation_prompt"] == "x" and config["validation_step_interval"] == 3
    assert "vae_cache_ondemand" not in datasets[0]
    assert not rendered.notes


def test_cpu_settings_applied_and_reported(tmp_path: Path, cpu: None) -> None:
    job = make_job(tmp_path, precision="bf16")
    rendered = SimpleTunerBackend().render(job, tmp_path / "run" / "rendered")
    config = json.loads(rendered.files["config"].read_text())
    assert config["optimizer"] == "optimi-adamw" and config["mixed_precision"] == "no"
    assert config["validation_disable"] is True and config["disable_benchmark"] is True
    assert json.loads(rendered.files["multidatabackend"].read_text())[0]["vae_cache_ondemand"] is True
    assert any("precision=bf16" in note for note in rendered.notes)


def test_unexpressible_settings_are_reported_not_dropped(tmp_path: Path, cpu: None) -> None:
    job = make_job(tmp_path, optimizer="dadaptadam", text_encoder_lr=5e-5)
    job = job.model_copy(update={"network": job.network.model_copy(update={"type": "loha", "args": {"conv_dim": 4}})})
    notes = "\n".join(SimpleTunerBackend().render(job, tmp_path / "run" / "rendered").notes)
    for fragment in ("dadaptadam", "text_encoder_lr", "loha", "conv_dim"):
        assert fragment in notes


def test_validation_split_holds_images_out_in_an_eval_dataset(tmp_path: Path, cpu: None) -> None:
    job = make_job(tmp_path, validation_split=0.34)  # 3 images: one held out
    rendered = SimpleTunerBackend().render(job, tmp_path / "run" / "rendered")
    datasets = json.loads(rendered.files["multidatabackend"].read_text())
    train, held = datasets[0], datasets[1]
    assert held["dataset_type"] == "eval" and held["cache_dir_vae"] != train["cache_dir_vae"]
    images = {p.name for p in Path(train["instance_data_dir"]).glob("*.png")}
    eval_images = {p.name for p in Path(held["instance_data_dir"]).glob("*.png")}
    assert len(images) == 2 and len(eval_images) == 1 and not images & eval_images
    assert {p.stem for p in Path(held["instance_data_dir"]).glob("*.txt")} == {n[:-4] for n in eval_images}
    config = rendered.values
    assert config["eval_steps_interval"] == 3  # saving.every_n_steps: a validation loss at every checkpoint
    assert config["report_to"] == "simpletuner" and config["validation_disable"] is False
    assert config["validation_step_interval"] > 6  # no validation images on CPU
    again = SimpleTunerBackend().render(job, tmp_path / "run" / "rendered")  # the same draw on every render
    assert {p.name for p in Path(train["instance_data_dir"]).glob("*.png")} == images
    assert again.values == config


def test_validation_split_with_one_image_is_refused(tmp_path: Path, cpu: None) -> None:
    job = make_job(tmp_path, validation_split=0.5)
    for extra in list(Path(job.dataset).iterdir()):
        if not extra.stem.endswith("00"):
            extra.unlink()
    with pytest.raises(LoraforgeError, match="too few images"):
        SimpleTunerBackend().render(job, tmp_path / "run" / "rendered")


def test_mapping_of_the_core_options(tmp_path: Path, cpu: None) -> None:
    job = make_job(
        tmp_path, learning_rate=3e-4, batch_size=2, gradient_accumulation=4, scheduler="cosine", warmup_steps=10
    )
    job = job.model_copy(update={"network": job.network.model_copy(update={"rank": 8, "alpha": 4.0})})
    config = SimpleTunerBackend().render(job, tmp_path / "run" / "rendered").values
    assert (config["lora_rank"], config["lora_alpha"], config["learning_rate"]) == (8, 4.0, 3e-4)
    assert (config["train_batch_size"], config["gradient_accumulation_steps"]) == (2, 4)
    assert (config["lr_scheduler"], config["lr_warmup_steps"]) == ("cosine", 10)
    assert (config["checkpoint_step_interval"], config["checkpoints_total_limit"]) == (3, 5)


def test_epochs_map_to_num_train_epochs(tmp_path: Path, cpu: None) -> None:
    job = make_job(tmp_path)
    job = job.model_copy(update={"training": job.training.model_copy(update={"steps": None, "epochs": 3})})
    config = SimpleTunerBackend().render(job, tmp_path / "run" / "rendered").values
    assert (config["max_train_steps"], config["num_train_epochs"]) == (0, 3)


def test_steps_win_over_epochs_and_say_so(tmp_path: Path, cpu: None) -> None:
    job = make_job(tmp_path)
    job = job.model_copy(update={"training": job.training.model_copy(update={"steps": 6, "epochs": 3})})
    rendered = SimpleTunerBackend().render(job, tmp_path / "run" / "rendered")
    assert (rendered.values["max_train_steps"], rendered.values["num_train_epochs"]) == (6, 0)
    assert any("training.epochs=3 ignored" in note for note in rendered.notes)


def test_awkward_strings_round_trip(tmp_path: Path, cpu: None) -> None:
    weird = 'a "quoted" \\ back\nslash # = ünïcødé ✓'
    job = make_job(tmp_path)
    job = job.model_copy(update={"backend_args": {"simpletuner": {"tracker_run_name": weird}}})
    rendered = SimpleTunerBackend().render(job, tmp_path / "dir with 'quote' and ü" / "rendered")
    assert json.loads(rendered.files["config"].read_text())["tracker_run_name"] == weird


def test_sd15_is_refused_up_front(tmp_path: Path) -> None:
    job = make_job(tmp_path).model_copy(update={"family": "sd15"})
    with pytest.raises(LoraforgeError) as info:
        SimpleTunerBackend().render(job, tmp_path / "run" / "rendered")
    assert "SD 1.5" in info.value.message and "--backend kohya" in (info.value.hint or "")


def test_sd15_refused_by_train_before_launch(tmp_path: Path) -> None:
    from orchestrator.training import preflight

    job = make_job(tmp_path).model_copy(update={"family": "sd15"})
    with pytest.raises(LoraforgeError) as info:
        preflight(job, SimpleTunerBackend())
    assert "simpletuner" in info.value.message and "--backend kohya" in (info.value.hint or "")


def test_link_dataset_drops_a_stale_bucket_cache(tmp_path: Path) -> None:
    source = make_dataset(tmp_path / "src", count=2, size=64)
    (source / "aspect_ratio_bucket_indices_loraforge.json").write_text("{}")
    (source / "manifest.json").write_text("{}")
    (source / "report.html").write_text("<html></html>")
    assert link_dataset(source, tmp_path / "copy") == 4
    linked = [p.suffix for p in (tmp_path / "copy").iterdir() if p.name != LINKED_MARKER]
    assert sorted(linked) == [".png", ".png", ".txt", ".txt"]
    assert os.path.samefile(source / "shape_00.png", tmp_path / "copy" / "shape_00.png")
    assert link_dataset(source, tmp_path / "copy") == 4  # its own folder is replaced on the next run


def test_rendering_never_deletes_the_users_photos(tmp_path: Path, cpu: None) -> None:
    """`render -o rendered` beside a dataset in ./data once replaced the photos by SimpleTuner's link folder."""
    job = make_job(tmp_path)  # the dataset is tmp_path/data
    photos = sorted(p.name for p in Path(job.dataset).iterdir())
    with pytest.raises(LoraforgeError, match="overlap"):
        SimpleTunerBackend().render(job, tmp_path / "rendered")  # its per-run image folder would be tmp_path/data
    (tmp_path / "other" / "data").mkdir(parents=True)
    (tmp_path / "other" / "data" / "mine.png").write_bytes(b"not made by loraforge")
    with pytest.raises(LoraforgeError, match="not made by loraforge"):
        SimpleTunerBackend().render(job, tmp_path / "other" / "rendered")
    assert sorted(p.name for p in Path(job.dataset).iterdir()) == photos
    assert (tmp_path / "other" / "data" / "mine.png").exists()


def test_render_command_keeps_everything_inside_its_out_folder(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(dump_job(job))
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "render", str(job_file), "--backend", "simpletuner", "-o", "r"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "r" / "rendered" / "config.json").exists() and (tmp_path / "r" / "data").is_dir()
    assert len(list((tmp_path / "data").iterdir())) == 6


def test_collect_resumes_from_the_latest_complete_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "output" / "simpletuner"
    for step in (3, 12, 6, 15, 18):
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        if step != 15:  # checkpoint-15: killed while saving, no state written yet
            (folder / "training_state.json").write_text(json.dumps({"global_step": step, "epoch": 1}))
        if step < 15:
            (folder / ".guard").write_text("complete")
    (out / "checkpoint-12" / ".guard").write_text("saving")  # 12: interrupted before the guard was completed
    # 18: stopped by Ctrl-C right after training_state.json, before weights and guard (seen in a real preemption)
    (out / "checkpoint-9.tmp").mkdir()
    (out / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    artifacts = SimpleTunerBackend().collect(make_job(tmp_path), tmp_path)
    assert [s for s, _ in artifacts.checkpoints] == [3, 6, 12, 15, 18]
    assert artifacts.resume is not None
    assert (artifacts.resume.step, artifacts.resume.state.name) == (6, "checkpoint-6")
    assert artifacts.lora == out / "pytorch_lora_weights.safetensors"


def old_python(tmp_path: Path) -> str:
    """A real interpreter older than 3.12 if this machine has one, else a tiny script that answers like 3.10."""
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for folder in sorted(versions.glob("3.1[01].*")):
        if (folder / "bin" / "python3").exists():
            return str(folder / "bin" / "python3")
    fake = tmp_path / "python3.10"
    fake.write_text("#!/bin/sh\necho 3.10.4\n")
    fake.chmod(0o755)
    return str(fake)


def test_find_python_too_old_says_what_is_needed(tmp_path: Path) -> None:
    with pytest.raises(BackendNotReady) as info:
        find_python((3, 12), (3, 15), old_python(tmp_path))
    assert "needs Python >= 3.12, < 3.15" in info.value.message
    assert "--python" in (info.value.hint or "")


def test_check_reports_python_too_old(tmp_path: Path) -> None:
    env = BackendEnv("simpletuner", Path(old_python(tmp_path)))
    problems = SimpleTunerBackend().check(env)
    assert "needs Python >= 3.12" in problems[0].message
    assert problems[0].fix == "loraforge setup simpletuner --force --python /path/to/python3.12"


def test_check_reports_simpletuner_missing() -> None:
    problems = SimpleTunerBackend().check(BackendEnv("simpletuner", Path(sys.executable)))
    if sys.version_info < (3, 12):
        assert "needs Python >= 3.12" in problems[0].message
    else:
        assert "simpletuner is not installed" in problems[0].message
        assert problems[0].fix == "loraforge setup simpletuner --force"


def test_setup_with_old_python_fails_cleanly(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "setup", "simpletuner", "--python", old_python(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert "needs Python >= 3.12, < 3.15" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_webhook_port_in_use_falls_back_to_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu: None) -> None:
    """A fixed LORAFORGE_WEBHOOK_PORT that another program holds: a warning, no webhooks, the run still renders."""
    import socket

    from orchestrator.events import Log

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        monkeypatch.setenv("LORAFORGE_WEBHOOK_PORT", str(port))
        backend = SimpleTunerBackend()
        events: list[object] = []
        with backend.open_channel(events.append):
            rendered = backend.render(make_job(tmp_path), tmp_path / "run" / "rendered")
            parser = backend.parser()
    finally:
        holder.close()
    (warning,) = events
    assert isinstance(warning, Log) and warning.level == "warning"
    assert f"127.0.0.1:{port}" in warning.text
    assert "from SimpleTuner's log instead" in warning.text
    assert "webhook_config" not in rendered.values and "webhooks" not in rendered.files
    assert parser.webhooks_live is None  # the stderr parser reports progress itself


def test_several_gpus_launch_through_accelerate_with_an_explicit_config(tmp_path: Path, gpu: None) -> None:
    import yaml

    job = make_job(tmp_path)
    job = job.model_copy(update={"distributed": job.distributed.model_copy(update={"gpus": 2})})
    backend = SimpleTunerBackend()
    rendered = backend.render(job, tmp_path / "run" / "rendered")
    config = yaml.safe_load(rendered.files["accelerate"].read_text())
    assert (config["num_processes"], config["num_machines"], config["distributed_type"]) == (2, 1, "MULTI_GPU")
    assert config["mixed_precision"] == rendered.values["mixed_precision"] and config["use_cpu"] is False
    argv = backend.command(job, rendered, BackendEnv("simpletuner", Path("/venv/bin/python"))).argv
    launcher = argv.index("/venv/bin/python")
    assert argv[launcher:] == [
        "/venv/bin/python", "-m", "accelerate.commands.launch", "--config_file", str(rendered.files["accelerate"]),
        "-m", "simpletuner.train",
    ]  # fmt: skip


def test_one_gpu_launches_directly(tmp_path: Path, gpu: None) -> None:
    job = make_job(tmp_path)
    backend = SimpleTunerBackend()
    rendered = backend.render(job, tmp_path / "run" / "rendered")
    assert "accelerate" not in rendered.files
    argv = backend.command(job, rendered, BackendEnv("simpletuner", Path("/venv/bin/python"))).argv
    assert argv[-3:] == ["/venv/bin/python", "-m", "simpletuner.train"]


def test_several_nodes_refused_clearly(tmp_path: Path, gpu: None) -> None:
    job = make_job(tmp_path)
    job = job.model_copy(update={"distributed": job.distributed.model_copy(update={"gpus": 2, "nodes": 2})})
    with pytest.raises(LoraforgeError) as info:
        SimpleTunerBackend().render(job, tmp_path / "run" / "rendered")
    assert "nodes=2" in info.value.message and "--nodes 1" in (info.value.hint or "")


def test_several_processes_without_cuda_run_on_cpu_with_gloo(tmp_path: Path, cpu: None) -> None:
    """Without CUDA, --gpus 2 means two CPU processes: accelerate's torchrun launcher (MULTI_GPU) with use_cpu, and
    ACCELERATE_USE_CPU in the child so each Accelerator joins a gloo group (a MULTI_CPU config starts one)."""
    import yaml

    job = make_job(tmp_path, precision="bf16")
    job = job.model_copy(update={"distributed": job.distributed.model_copy(update={"gpus": 2})})
    backend = SimpleTunerBackend()
    rendered = backend.render(job, tmp_path / "run" / "rendered")
    config = yaml.safe_load(rendered.files["accelerate"].read_text())
    assert (config["distributed_type"], config["num_processes"], config["num_machines"]) == ("MULTI_GPU", 2, 1)
    assert config["use_cpu"] is True and config["mixed_precision"] == "no"
    assert isinstance(config["main_process_port"], int) and 0 < config["main_process_port"] < 65536
    assert any("2 CPU processes (gloo)" in note for note in rendered.notes)
    launch = backend.command(job, rendered, BackendEnv("simpletuner", Path("/venv/bin/python")))
    assert "ACCELERATE_USE_CPU=true" in launch.argv and launch.env["ACCELERATE_USE_CPU"] == "true"
    assert launch.argv[launch.argv.index("/venv/bin/python") :][:3] == [
        "/venv/bin/python", "-m", "accelerate.commands.launch",
    ]  # fmt: skip


def test_several_gpus_leave_the_device_to_accelerate(tmp_path: Path, gpu: None) -> None:
    job = make_job(tmp_path)
    job = job.model_copy(update={"distributed": job.distributed.model_copy(update={"gpus": 2})})
    backend = SimpleTunerBackend()
    rendered = backend.render(job, tmp_path / "run" / "rendered")
    launch = backend.command(job, rendered, BackendEnv("simpletuner", Path("/venv/bin/python")))
    assert not any("ACCELERATE_USE_CPU" in arg for arg in launch.argv)
    assert not any("CPU processes" in note for note in rendered.notes)
