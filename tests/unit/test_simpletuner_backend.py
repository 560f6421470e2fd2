"""SimpleTuner rendering, option mapping, refusals, the command, environment checks and collection (no trainer)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backends.base import Endpoint, Rendered, Resume
from backends.simpletuner import SimpleTunerBackend
from orchestrator.dataset.model import RUN_COPY_MARKER, load_dataset
from orchestrator.envs import BackendEnv, find_python, resolve_runtime
from orchestrator.errors import BackendNotReady, LoraforgeError
from orchestrator.job import JobSpec, build_job, dump_job
from orchestrator.runs import RunDir, create_run
from orchestrator.tiny.dataset import make_dataset

PYTHON = Path("/venv/bin/python")


def make_job(tmp_path: Path, *, trigger: str | None = None, **training: object) -> JobSpec:
    model = tmp_path / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    data = make_dataset(tmp_path / "data", count=3, size=64)
    settings = {"steps": 6, "resolution": 128, "seed": 42, "gradient_checkpointing": False, **training}
    return build_job(
        {
            "name": "tiny",
            "base_model": str(model),
            "family": "sdxl",
            "trigger": trigger,
            "dataset": str(data),
            "network": {"rank": 4},
            "training": settings,
            "saving": {"every_n_steps": 3, "keep_last": 5},
            "output": {"dir": str(tmp_path / "runs")},
        }
    )


def runtime(device: str, *, offline: bool = True, python: Path = PYTHON) -> BackendEnv:
    """The environment as a run resolves it, with the device and hub access given (nothing read from ours)."""
    environ = {"LORAFORGE_DEVICE": device, "HF_HUB_OFFLINE": "1" if offline else ""}
    return resolve_runtime(BackendEnv("simpletuner", python, versions={"cuda": "no"}), environ=environ)


CPU = runtime("cpu")
GPU = runtime("cuda", offline=False)


def render(job: JobSpec, env: BackendEnv = CPU, run: RunDir | None = None, **kwargs: object) -> Rendered:
    run = run or create_run(job, "simpletuner")
    return SimpleTunerBackend().render(job, load_dataset(job.dataset), run, env, **kwargs)  # type: ignore[arg-type]


def config_of(rendered: Rendered) -> dict:
    return json.loads(rendered.files["config"].read_text())


def test_render_matches_the_verified_cpu_config(fixtures_dir: Path, tmp_path: Path) -> None:
    """The options that ran for real (fixtures config.run1.json) come out of an equivalent JobSpec unchanged."""
    job = make_job(tmp_path, precision="fp32")
    run = create_run(job, "simpletuner")
    rendered = render(job, run=run)
    config = config_of(rendered)
    verified = json.loads((fixtures_dir / "logs/simpletuner/config.run1.json").read_text())
    paths = {"pretrained_model_name_or_path", "data_backend_config", "pretrained_vae_model_name_or_path", "output_dir"}
    for key, value in verified.items():
        if key in paths:
            assert key in config, key
        elif key != "vae_batch_size":  # a throughput knob, left at SimpleTuner's default
            assert config[key] == value, key
    assert config["pretrained_vae_model_name_or_path"] == job.base_model  # local VAE: the default is a hub id
    assert config["output_dir"] == str(run.output / "simpletuner")
    assert rendered.values == config
    assert rendered.data == run.data and rendered.endpoint is None


def test_datasets_match_the_verified_backend(fixtures_dir: Path, tmp_path: Path) -> None:
    job = make_job(tmp_path)
    rendered = render(job)
    ours = json.loads(rendered.files["multidatabackend"].read_text())
    verified = json.loads((fixtures_dir / "logs/simpletuner/multidatabackend.json").read_text())
    for mine, theirs in zip(ours, verified, strict=True):
        for key, value in theirs.items():
            if key not in ("id", "instance_data_dir", "cache_dir_vae", "cache_dir"):
                assert mine[key] == value, key
    # the run's own folder (SimpleTuner's bucket cache lands there), exactly the dataset's images and captions
    assert Path(ours[0]["instance_data_dir"]) == rendered.data
    assert sorted(p.name for p in rendered.data.iterdir() if p.name != RUN_COPY_MARKER) == sorted(
        p.name for p in Path(job.dataset).iterdir()
    )


def test_the_run_copy_leaves_caches_and_hidden_folders_out(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    source = Path(job.dataset)
    (source / "aspect_ratio_bucket_indices_loraforge.json").write_text("{}")  # another config's stale bucket cache
    (source / "manifest.json").write_text("{}")
    (source / ".loraforge-prep").mkdir()
    (source / ".loraforge-prep" / "copy.png").write_bytes((source / "shape_00.png").read_bytes())
    data = render(job).data
    assert sorted(p.suffix for p in data.iterdir() if p.name != RUN_COPY_MARKER) == [".png"] * 3 + [".txt"] * 3
    assert os.path.samefile(source / "shape_00.png", data / "shape_00.png")  # hard links, no copies


def test_webhooks_secret_stays_in_an_owner_only_file(fixtures_dir: Path, tmp_path: Path) -> None:
    job = make_job(tmp_path)
    run = create_run(job, "simpletuner")
    endpoint = Endpoint(url="http://127.0.0.1:40123/hook", job_id="lf-0123abcd", secret="s3cr3t-Token_value")
    rendered = render(job, run=run, endpoint=endpoint)
    assert rendered.endpoint == endpoint
    config = config_of(rendered)
    hooks_file = Path(config["webhook_config"])
    assert hooks_file == rendered.files["webhooks"] and stat.S_IMODE(hooks_file.stat().st_mode) == 0o600
    (hook,) = json.loads(hooks_file.read_text())
    verified = json.loads((fixtures_dir / "logs/simpletuner/webhooks.json").read_text())[0]
    assert hook["webhook_type"] == verified["webhook_type"] == "raw"
    assert (hook["callback_url"], hook["auth_token"]) == (endpoint.url, endpoint.secret)  # sent as X-API-Key
    launch = SimpleTunerBackend().command(job, rendered, CPU)
    assert launch.env["SIMPLETUNER_JOB_ID"] == endpoint.job_id
    for name, path in rendered.files.items():
        if name != "webhooks":
            assert endpoint.secret not in path.read_text(), name
    assert endpoint.secret not in json.dumps([launch.argv, launch.env])
    # rendered again without a receiver (render, or a port that was taken): the old secret and URL are gone
    again = render(job, run=run)
    assert "webhook_config" not in again.values and "webhooks" not in again.files and not hooks_file.exists()
    assert "SIMPLETUNER_JOB_ID" not in SimpleTunerBackend().command(job, again, CPU).env


def test_resume_as_in_the_verified_resume_run(fixtures_dir: Path, tmp_path: Path) -> None:
    job = make_job(tmp_path)
    run = create_run(job, "simpletuner")
    checkpoint = run.output / "simpletuner" / "checkpoint-3"
    checkpoint.mkdir(parents=True)
    config = config_of(render(job, run=run, resume=Resume(checkpoint, 3)))
    assert config["resume_from_checkpoint"] == "checkpoint-3"  # SimpleTuner looks it up inside output_dir
    assert "resume_from_checkpoint" in json.loads((fixtures_dir / "logs/simpletuner/config.run2.json").read_text())
    with pytest.raises(LoraforgeError, match="not in this run's SimpleTuner output folder"):
        render(job, run=run, resume=Resume(tmp_path / "elsewhere" / "checkpoint-3", 3))


def test_command_on_cpu(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    rendered = render(job)
    launch = SimpleTunerBackend().command(job, rendered, CPU)
    assert launch.argv == [str(PYTHON), "-m", "simpletuner.train"]
    assert launch.env == {
        "CONFIG_BACKEND": "json",
        "CONFIG_PATH": str(rendered.files["config"]),
        "SIMPLETUNER_DISABLE_COLORS": "1",
        "PYTHONUNBUFFERED": "1",
        "ACCELERATE_CONFIG_FILE": os.devnull,  # a user's own accelerate default never changes a run
        "CUDA_VISIBLE_DEVICES": "",
    }
    assert launch.cwd == rendered.files["config"].parent  # SimpleTuner's debug.log stays in the run folder
    assert "CUDA_VISIBLE_DEVICES" not in SimpleTunerBackend().command(job, rendered, GPU).env


def test_cpu_settings_are_not_forced_on_gpu(tmp_path: Path) -> None:
    job = make_job(tmp_path, precision="bf16")
    job = job.model_copy(update={"sampling": job.sampling.model_copy(update={"every_n_steps": 3, "prompts": ["x"]})})
    rendered = render(job, GPU)
    config = config_of(rendered)
    datasets = json.loads(rendered.files["multidatabackend"].read_text())
    assert config["optimizer"] == "adamw_bf16" and config["mixed_precision"] == "bf16"
    assert "pretrained_vae_model_name_or_path" not in config and "validation_disable" not in config
    assert config["validation_prompt"] == "x" and config["validation_step_interval"] == 3
    assert "vae_cache_ondemand" not in datasets[0]
    assert not rendered.notes


def test_cpu_settings_applied_and_reported(tmp_path: Path) -> None:
    rendered = render(make_job(tmp_path, precision="bf16"))
    config = config_of(rendered)
    assert config["optimizer"] == "optimi-adamw" and config["mixed_precision"] == "no"
    assert config["validation_disable"] is True and config["disable_benchmark"] is True
    assert json.loads(rendered.files["multidatabackend"].read_text())[0]["vae_cache_ondemand"] is True
    assert any("precision=bf16" in note for note in rendered.notes)


def test_offline_gpu_keeps_validation_off(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    job = job.model_copy(update={"sampling": job.sampling.model_copy(update={"every_n_steps": 3, "prompts": ["x"]})})
    rendered = render(job, runtime("cuda", offline=True))
    assert rendered.values["validation_disable"] is True and "validation_prompt" not in rendered.values
    assert any("offline (HF_HUB_OFFLINE)" in note for note in rendered.notes)


def test_the_trigger_is_rendered_where_simpletuner_uses_it(tmp_path: Path) -> None:
    job = make_job(tmp_path, trigger='ohwx "thing"')
    for image in Path(job.dataset).glob("*.txt"):
        image.write_text(f'ohwx "thing", {image.read_text()}')
    job = job.model_copy(update={"sampling": job.sampling.model_copy(update={"every_n_steps": 3})})
    rendered = render(job, GPU)
    (images, _) = json.loads(rendered.files["multidatabackend"].read_text())
    assert images["instance_prompt"] == job.trigger and images["caption_strategy"] == "textfile"
    assert config_of(rendered)["validation_prompt"] == job.trigger  # sampling on, no prompt given
    assert all(p.read_text().startswith('ohwx "thing"') for p in rendered.data.glob("*.txt"))
    untriggered = make_job(tmp_path / "plain")
    untriggered = untriggered.model_copy(
        update={"sampling": untriggered.sampling.model_copy(update={"every_n_steps": 3})}
    )
    plain = render(untriggered, GPU)
    assert plain.values["validation_disable"] is True and "validation_prompt" not in plain.values
    assert any("no prompt and no trigger" in note for note in plain.notes)
    assert "instance_prompt" not in json.loads(plain.files["multidatabackend"].read_text())[0]


def test_unexpressible_settings_are_reported_not_dropped(tmp_path: Path) -> None:
    job = make_job(tmp_path, optimizer="dadaptadam", text_encoder_lr=5e-5, shuffle_captions=True)
    job = job.model_copy(update={"network": job.network.model_copy(update={"type": "ia3", "args": {"conv_dim": 4}})})
    rendered = render(job)
    notes = "\n".join(rendered.notes)
    for fragment in ("dadaptadam", "text_encoder_lr", "network.type=ia3", "conv_dim", "shuffle_captions"):
        assert fragment in notes
    assert rendered.values["lora_type"] == "standard" and "lycoris" not in rendered.files


@pytest.mark.parametrize(("network_type", "algo"), [("locon", "lora"), ("loha", "loha"), ("lokr", "lokr")])
def test_lycoris_networks_get_their_own_config_file(tmp_path: Path, network_type: str, algo: str) -> None:
    job = make_job(tmp_path)
    network = {"type": network_type, "rank": 8, "alpha": 4.0, "args": {"conv_dim": 2, "conv_alpha": 1, "x": 1}}
    job = job.model_copy(update={"network": job.network.model_copy(update=network)})
    rendered = render(job)
    config = config_of(rendered)
    assert config["lora_type"] == "lycoris" and config["lycoris_config"] == str(rendered.files["lycoris"])
    assert "lora_rank" not in config and "lora_alpha" not in config  # PEFT's, not LyCORIS'
    lycoris = json.loads(rendered.files["lycoris"].read_text())
    assert (lycoris["algo"], lycoris["linear_dim"], lycoris["linear_alpha"]) == (algo, 8, 4)
    assert (lycoris["conv_dim"], lycoris["conv_alpha"]) == (2, 1) and "x" not in lycoris
    assert any("network.args ['x']" in note for note in rendered.notes)


def test_lycoris_on_flux_falls_back_to_lora_and_says_so(tmp_path: Path) -> None:
    job = make_job(tmp_path).model_copy(update={"family": "flux"})
    job = job.model_copy(update={"network": job.network.model_copy(update={"type": "lokr"})})
    rendered = render(job)
    assert rendered.values["lora_type"] == "standard"
    assert any("network.type=lokr" in note and "flux" in note for note in rendered.notes)


@pytest.mark.parametrize(
    "network_type", ["lora", "locon", "loha", "lokr", "ia3", "dylora", "glora", "boft", "diag-oft"]
)
@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_preset_translation_agrees_with_the_backend(tmp_path: Path, network_type: str, family: str) -> None:
    """`loraforge presets ... --backend simpletuner` lists a network type as not expressible exactly when
    rendering falls back to a standard LoRA."""
    from orchestrator.presets.translate import not_expressible_by_simpletuner

    job = make_job(tmp_path).model_copy(update={"family": family})
    job = job.model_copy(update={"network": job.network.model_copy(update={"type": network_type})})
    fell_back = any("network.type=" in note for note in render(job).notes)
    listed = any(line.startswith("network.type") for line in not_expressible_by_simpletuner(job.model_dump()))
    assert listed == fell_back


def test_validation_split_holds_images_out_in_an_eval_dataset(tmp_path: Path) -> None:
    job = make_job(tmp_path, validation_split=0.34)  # 3 images: one held out
    run = create_run(job, "simpletuner")
    rendered = render(job, run=run)
    datasets = json.loads(rendered.files["multidatabackend"].read_text())
    train, held = datasets[0], datasets[1]
    assert held["dataset_type"] == "eval" and held["cache_dir_vae"] != train["cache_dir_vae"]
    assert Path(held["instance_data_dir"]) == run.path / "eval"
    images = {p.name for p in Path(train["instance_data_dir"]).glob("*.png")}
    eval_images = {p.name for p in Path(held["instance_data_dir"]).glob("*.png")}
    assert len(images) == 2 and len(eval_images) == 1 and not images & eval_images
    assert {p.stem for p in Path(held["instance_data_dir"]).glob("*.txt")} == {n[:-4] for n in eval_images}
    config = rendered.values
    assert config["eval_steps_interval"] == 3  # saving.every_n_steps: a validation loss at every checkpoint
    assert config["report_to"] == "simpletuner" and config["validation_disable"] is False
    assert config["validation_step_interval"] > 6  # no validation images on CPU
    again = render(job, run=run)  # the same draw on every render
    assert {p.name for p in Path(train["instance_data_dir"]).glob("*.png")} == images
    assert again.values == config


def test_validation_split_with_one_image_is_refused(tmp_path: Path) -> None:
    job = make_job(tmp_path, validation_split=0.5)
    for extra in list(Path(job.dataset).iterdir()):
        if not extra.stem.endswith("00"):
            extra.unlink()
    with pytest.raises(LoraforgeError, match="too few images"):
        render(job)


def test_mapping_of_the_core_options(tmp_path: Path) -> None:
    job = make_job(
        tmp_path, learning_rate=3e-4, batch_size=2, gradient_accumulation=4, scheduler="cosine", warmup_steps=10
    )
    job = job.model_copy(update={"network": job.network.model_copy(update={"rank": 8, "alpha": 4.0})})
    config = render(job).values
    assert (config["lora_rank"], config["lora_alpha"], config["learning_rate"]) == (8, 4.0, 3e-4)
    assert (config["train_batch_size"], config["gradient_accumulation_steps"]) == (2, 4)
    assert (config["lr_scheduler"], config["lr_warmup_steps"]) == ("cosine", 10)
    assert (config["checkpoint_step_interval"], config["checkpoints_total_limit"]) == (3, 5)


def test_epochs_map_to_num_train_epochs(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    job = job.model_copy(update={"training": job.training.model_copy(update={"steps": None, "epochs": 3})})
    config = render(job).values
    assert (config["max_train_steps"], config["num_train_epochs"]) == (0, 3)


def test_steps_win_over_epochs_and_say_so(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    job = job.model_copy(update={"training": job.training.model_copy(update={"steps": 6, "epochs": 3})})
    rendered = render(job)
    assert (rendered.values["max_train_steps"], rendered.values["num_train_epochs"]) == (6, 0)
    assert any("training.epochs=3 ignored" in note for note in rendered.notes)


def test_awkward_strings_round_trip(tmp_path: Path) -> None:
    weird = 'a "quoted" \\ back\nslash # = ünïcødé ✓'
    job = make_job(tmp_path)
    job = job.model_copy(update={"backend_args": {"simpletuner": {"tracker_run_name": weird}}})
    job = job.model_copy(update={"output": job.output.model_copy(update={"dir": tmp_path / "dir with 'quote' and ü"})})
    rendered = render(job)
    assert config_of(rendered)["tracker_run_name"] == weird
    assert json.loads(rendered.files["multidatabackend"].read_text())[0]["instance_data_dir"] == str(rendered.data)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), [1.0, float("-inf")]])
def test_non_finite_numbers_never_reach_the_json(tmp_path: Path, value: object) -> None:
    job = make_job(tmp_path).model_copy(update={"backend_args": {"simpletuner": {"snr_gamma": value}}})
    with pytest.raises(LoraforgeError, match="snr_gamma.*not a finite number"):
        render(job)


def test_sd15_is_refused_up_front(tmp_path: Path) -> None:
    job = make_job(tmp_path).model_copy(update={"family": "sd15"})
    with pytest.raises(LoraforgeError) as info:
        render(job)
    assert "SD 1.x pipeline" in info.value.message and "--backend kohya" in (info.value.hint or "")


def test_sd15_refused_by_preflight_with_the_reason(tmp_path: Path) -> None:
    from orchestrator.preflight import preflight

    job = make_job(tmp_path).model_copy(update={"family": "sd15"})
    with pytest.raises(LoraforgeError) as info:
        preflight(job, "simpletuner", need_env=False)
    assert SimpleTunerBackend.refused["sd15"] in info.value.message
    assert "--backend kohya" in (info.value.hint or "")


def test_rendering_never_deletes_the_users_photos(tmp_path: Path) -> None:
    """A run folder whose image folder would be the dataset itself (`render -o .` beside ./data) is refused."""
    job = make_job(tmp_path)  # the dataset is tmp_path/data
    photos = sorted(p.name for p in Path(job.dataset).iterdir())
    with pytest.raises(LoraforgeError, match="overlap"):
        render(job, run=RunDir(tmp_path))
    (tmp_path / "other" / "data").mkdir(parents=True)
    (tmp_path / "other" / "data" / "mine.png").write_bytes(b"not made by loraforge")
    with pytest.raises(LoraforgeError, match="not made by loraforge"):
        render(job, run=RunDir(tmp_path / "other"))
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


def test_watched_files_are_in_the_run_output(tmp_path: Path) -> None:
    job = make_job(tmp_path, validation_split=0.34)
    run = create_run(job, "simpletuner")
    metrics, samples = render(job, run=run).watched
    out = run.output / "simpletuner"
    assert metrics.path == out / "training_metrics.jsonl" and metrics.validation_prefix == "loss/val/"  # type: ignore[union-attr]
    assert samples.folder == out / "validation_images"  # type: ignore[union-attr]
    assert samples.pattern.match("step_12_prompt.png").group("step") == "12"  # type: ignore[union-attr]


def test_collect_resumes_from_the_latest_complete_checkpoint(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    out = run.output / "simpletuner"
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
    artifacts = SimpleTunerBackend().collect(make_job(tmp_path), run)
    assert [s for s, _ in artifacts.checkpoints] == [3, 6, 12, 15, 18]
    assert artifacts.resume is not None
    assert (artifacts.resume.step, artifacts.resume.state.name) == (6, "checkpoint-6")
    assert artifacts.lora == out / "pytorch_lora_weights.safetensors"


def test_collect_without_output(tmp_path: Path) -> None:
    artifacts = SimpleTunerBackend().collect(make_job(tmp_path), RunDir(tmp_path / "empty"))
    assert (artifacts.lora, artifacts.checkpoints, artifacts.resume) == (None, [], None)


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
    assert out.returncode == 2  # bad input
    assert "needs Python >= 3.12, < 3.15" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def several(job: JobSpec, gpus: int = 2, nodes: int = 1) -> JobSpec:
    return job.model_copy(update={"distributed": job.distributed.model_copy(update={"gpus": gpus, "nodes": nodes})})


def test_several_gpus_launch_through_accelerate_with_an_explicit_config(tmp_path: Path) -> None:
    import yaml

    job = several(make_job(tmp_path))
    rendered = render(job, GPU)
    config = yaml.safe_load(rendered.files["accelerate"].read_text())
    assert (config["num_processes"], config["num_machines"], config["distributed_type"]) == (2, 1, "MULTI_GPU")
    assert config["mixed_precision"] == rendered.values["mixed_precision"] and config["use_cpu"] is False
    launch = SimpleTunerBackend().command(job, rendered, GPU)
    assert launch.argv == [
        str(PYTHON), "-m", "accelerate.commands.launch", "--config_file", str(rendered.files["accelerate"]),
        "-m", "simpletuner.train",
    ]  # fmt: skip
    assert "ACCELERATE_USE_CPU" not in launch.env  # accelerate picks the GPUs
    assert not any("CPU processes" in note for note in rendered.notes)


def test_one_gpu_launches_directly(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    rendered = render(job, GPU)
    assert "accelerate" not in rendered.files
    assert SimpleTunerBackend().command(job, rendered, GPU).argv == [str(PYTHON), "-m", "simpletuner.train"]


def test_several_nodes_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(LoraforgeError) as info:
        render(several(make_job(tmp_path), nodes=2), GPU)
    assert "nodes=2" in info.value.message and "--nodes 1" in (info.value.hint or "")


def test_several_processes_without_cuda_run_on_cpu_with_gloo(tmp_path: Path) -> None:
    """Without CUDA, --gpus 2 means two CPU processes: accelerate's torchrun launcher (MULTI_GPU) with use_cpu, and
    ACCELERATE_USE_CPU in the child so each Accelerator joins a gloo group (a MULTI_CPU config starts one)."""
    import yaml

    job = several(make_job(tmp_path, precision="bf16"))
    rendered = render(job)
    config = yaml.safe_load(rendered.files["accelerate"].read_text())
    assert (config["distributed_type"], config["num_processes"], config["num_machines"]) == ("MULTI_GPU", 2, 1)
    assert config["use_cpu"] is True and config["mixed_precision"] == "no"
    assert isinstance(config["main_process_port"], int) and 0 < config["main_process_port"] < 65536
    assert any("2 CPU processes (gloo)" in note for note in rendered.notes)
    launch = SimpleTunerBackend().command(job, rendered, CPU)
    assert launch.env["ACCELERATE_USE_CPU"] == "true" and launch.env["CUDA_VISIBLE_DEVICES"] == ""
    assert launch.argv[:3] == [str(PYTHON), "-m", "accelerate.commands.launch"]
