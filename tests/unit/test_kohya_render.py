"""Rendering sd-scripts' files: values round-trip through TOML, the run trains from its own copy of the dataset, argv
is a pure snapshot, the device comes from the environment, bad input and secrets stop before anything is written."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backends import base
from backends.base import Rendered, Resume
from backends.kohya import KohyaBackend
from backends.kohya.options import is_secret, loraforge_optimizer, optimizers, sd_scripts_optimizer
from orchestrator.dataset.model import load_dataset
from orchestrator.envs import BackendEnv, save_env
from orchestrator.errors import ConfigError, LoraforgeError
from orchestrator.job import JobSpec, Optimizer, build_job
from orchestrator.preflight import preflight
from orchestrator.runs import RunDir, create_run

CPU = BackendEnv("kohya", Path("/envs/kohya/bin/python"), root=Path("/opt/sd-scripts"), device="cpu")
GPU = BackendEnv("kohya", Path("/envs/kohya/bin/python"), root=Path("/opt/sd-scripts"), device="cuda")


def make_images(folder: Path, captions: dict[str, str | None]) -> Path:
    from PIL import Image

    for name, caption in captions.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48)).save(path)
        if caption is not None:
            path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return folder


def job(tmp_path: Path, **extra: Any) -> JobSpec:
    data: dict[str, Any] = {
        "name": "me",
        "base_model": "stabilityai/stable-diffusion-xl-base-1.0",
        "family": "sdxl",
        "dataset": str(tmp_path / "data"),
        "output": {"dir": str(tmp_path / "runs")},
        "training": {"steps": 10},
    }
    data.update(extra)
    return build_job(data)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_images(tmp_path / "data", {"a.png": "ohwx, a photo", "b.PNG": "ohwx, b", "sub/c.jpg": "ohwx, c"})


def render(j: JobSpec, env: BackendEnv = CPU, *, resume: Resume | None = None) -> tuple[Rendered, RunDir]:
    run = create_run(j, "kohya")
    rendered = KohyaBackend().render(j, load_dataset(j.dataset), run, env, resume=resume)
    return rendered, run


def config_of(rendered: Rendered) -> dict[str, Any]:
    return tomllib.loads(rendered.files["config"].read_text(encoding="utf-8"))


def test_render_writes_explicit_steps_txt_captions_and_reads_back(tmp_path: Path, data: Path) -> None:
    rendered, run = render(job(tmp_path, saving={"every_n_steps": 5, "keep_last": 2}))
    config = config_of(rendered)
    assert config["max_train_steps"] == 10
    assert config["caption_extension"] == ".txt"
    assert (
        config["network_module"] == "networks.lora" and config["network_dim"] == 16 and config["network_alpha"] == 16.0
    )
    assert config["save_state"] is True and config["save_last_n_steps"] == 10
    assert config["network_train_unet_only"] is True  # no text encoder lr given
    assert config["output_dir"] == str(run.output / "kohya") and config["optimizer_type"] == "AdamW"
    assert rendered.values == config and all(path.parent == run.rendered for path in rendered.files.values())
    dataset = tomllib.loads(rendered.files["dataset"].read_text())
    assert dataset["datasets"][0]["subsets"][0]["image_dir"] == str(run.data) == str(rendered.data)
    assert dataset["general"]["caption_extension"] == ".txt"
    accelerate = rendered.files["accelerate"].read_text()
    assert "num_processes: 1" in accelerate and 'distributed_type: "NO"' in accelerate


def test_the_run_trains_from_its_own_flat_copy_of_the_dataset(tmp_path: Path, data: Path) -> None:
    """sd-scripts ignores subfolders and mixed-case suffixes: the run's copy holds every image the dataset model
    sees, flat, lower-case, with its caption as trained."""
    (data / ".cache").mkdir()
    make_images(data / ".cache", {"hidden.png": "not trained"})
    rendered, run = render(job(tmp_path))
    copied = sorted(p.name for p in run.data.iterdir() if not p.name.startswith("."))
    assert copied == ["a.png", "a.txt", "b.png", "b.txt", "sub__c.jpg", "sub__c.txt"]
    assert (run.data / "sub__c.txt").read_text() == "ohwx, c"
    assert os.path.samefile(run.data / "a.png", data / "a.png")  # a hard link, not a copy
    assert rendered.data == run.data


def test_device_comes_from_the_environment_not_from_an_earlier_check(tmp_path: Path, data: Path) -> None:
    cpu = config_of(render(job(tmp_path), CPU)[0])
    gpu, run = render(job(tmp_path), GPU)
    assert (cpu["mixed_precision"], cpu["max_data_loader_n_workers"], "sdpa" in cpu) == ("no", 0, False)
    assert (config_of(gpu)["mixed_precision"], config_of(gpu)["sdpa"]) == ("bf16", True)
    assert "use_cpu: false" in (run.rendered / "accelerate.yaml").read_text()
    assert any("trained in fp32" in note for note in render(job(tmp_path), CPU)[0].notes)


def test_shuffled_captions_keep_the_trigger_in_front(tmp_path: Path, data: Path) -> None:
    def general(**extra: Any) -> dict[str, Any]:
        rendered, _ = render(job(tmp_path, **extra))
        return tomllib.loads(rendered.files["dataset"].read_text())["general"]

    assert general(trigger="ohwx") == {"caption_extension": ".txt", "shuffle_caption": False, "keep_tokens": 0}
    shuffled = general(trigger="ohwx", training={"steps": 10, "shuffle_captions": True})
    assert (shuffled["shuffle_caption"], shuffled["keep_tokens"]) == (True, 1)
    untriggered = general(training={"steps": 10, "shuffle_captions": True})
    assert (untriggered["shuffle_caption"], untriggered["keep_tokens"]) == (True, 0)


def test_a_trigger_that_is_not_the_first_tag_is_noted_when_shuffling(tmp_path: Path) -> None:
    make_images(tmp_path / "data", {"a.png": "ohwx, a photo", "b.png": "a photo, ohwx"})
    rendered, _ = render(job(tmp_path, trigger="ohwx", training={"steps": 10, "shuffle_captions": True}))
    assert any("1 of 2 captions do not start with the trigger 'ohwx' (e.g. b.png)" in n for n in rendered.notes)


def test_resume_adds_skip_until_initial_step(tmp_path: Path, data: Path) -> None:
    state = tmp_path / "me-step00000002-state"
    config = config_of(render(job(tmp_path), resume=Resume(state, 2))[0])
    assert config["resume"] == str(state) and config["skip_until_initial_step"] is True


def test_lycoris_types_use_the_lycoris_module(tmp_path: Path, data: Path) -> None:
    config = config_of(render(job(tmp_path, network={"type": "loha", "args": {"conv_dim": 4}}))[0])
    assert config["network_module"] == "lycoris.kohya" and config["network_args"] == ["algo=loha", "conv_dim=4"]


def test_argv_is_a_pure_snapshot(tmp_path: Path, data: Path) -> None:
    backend = KohyaBackend()
    j = job(tmp_path)
    rendered, run = render(j)
    environ = dict(os.environ)
    launch = backend.command(j, rendered, CPU)
    assert launch.argv == [
        "/envs/kohya/bin/python",
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(run.rendered / "accelerate.yaml"),
        "sdxl_train_network.py",
        "--config_file",
        str(run.rendered / "config.toml"),
    ]
    assert launch.env == {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}  # only what it sets
    assert launch.cwd == Path("/opt/sd-scripts")
    assert backend.command(j, rendered, CPU) == launch and dict(os.environ) == environ


def test_the_backend_object_keeps_no_state(tmp_path: Path, data: Path) -> None:
    backend = KohyaBackend()
    before = dict(vars(backend))
    backend.check(CPU)
    render(job(tmp_path), GPU)
    assert vars(backend) == before == {}
    assert (backend.label, backend.webhooks, set(backend.refused)) == ("sd-scripts", False, {"qwen_image", "flux2"})
    assert backend.families == {"sd15", "sdxl", "flux", "sd3", "chroma", "lumina2"}


def test_unknown_backend_args_are_refused_before_anything_is_written(tmp_path: Path, data: Path) -> None:
    j = job(tmp_path, backend_args={"kohya": {"max_grad_nrom": 1.0}})
    run = create_run(j, "kohya")
    with pytest.raises(LoraforgeError, match="no option max_grad_nrom"):
        KohyaBackend().render(j, load_dataset(data), run, CPU)
    assert not any(run.rendered.iterdir()) and not run.data.exists()
    config = config_of(render(job(tmp_path, backend_args={"kohya": {"max_grad_norm": 0.5}}))[0])
    assert config["max_grad_norm"] == 0.5


def test_a_secret_in_backend_args_is_refused_by_name_and_never_written(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from orchestrator.cli import main

    secret = "f3c9a1d27be04c5e8a6b91d0e2f47a35c8d1b6e9"  # looks like a real wandb key
    with pytest.raises(ConfigError) as info:
        job(tmp_path, backend_args={"kohya": {"wandb_api_key": secret, "log_with": "wandb"}})
    assert "backend_args.kohya.wandb_api_key holds a secret" in str(info.value) and secret not in str(info.value)
    # through the command line: refused before a run folder (and its job.yaml) exists
    spec = {
        "name": "s",
        "base_model": str(tmp_path / "model.safetensors"),
        "family": "sd15",
        "dataset": str(data),
        "training": {"steps": 1},
        "output": {"dir": str(tmp_path / "runs")},
        "backend_args": {"kohya": {"wandb_api_key": secret}},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    assert main(["train", str(tmp_path / "job.yaml"), "--backend", "kohya"]) == 2
    out = "".join(capsys.readouterr())
    assert "WANDB_API_KEY" in out and secret not in out
    assert not (tmp_path / "runs").exists()


def test_secret_names() -> None:
    for name in ("wandb_api_key", "huggingface_token", "--hf-token", "apiKey", "db_password", "client_secret"):
        assert is_secret(name), name
    for name in ("max_token_length", "keep_tokens", "keep_tokens_separator", "token_warmup_min", "tokenizer_cache_dir"):
        assert not is_secret(name), name


def test_one_optimizer_table_for_every_optimizer_loraforge_names() -> None:
    assert {o.name for o in optimizers()} == set(get_args(Optimizer))
    for optimizer in get_args(Optimizer):
        assert loraforge_optimizer(sd_scripts_optimizer(optimizer)) == optimizer
    assert loraforge_optimizer("sgd") == loraforge_optimizer("SGDNesterov") == "sgd"
    assert loraforge_optimizer("PagedAdamW8bit") is None


def test_prompts_are_one_line_each_with_the_sampler_settings(tmp_path: Path, data: Path) -> None:
    rendered, run = render(job(tmp_path, sampling={"every_n_steps": 2, "prompts": ["a cat", "ohwx, a dog"], "seed": 7}))
    assert (run.rendered / "prompts.txt").read_text() == "a cat --s 20 --d 7\nohwx, a dog --s 20 --d 7\n"
    assert config_of(rendered)["sample_prompts"] == str(run.rendered / "prompts.txt")
    for prompt in ("a cat\r--w 8192", "a cat --w 8192", "a cat\nanother prompt"):  # never reach the file
        with pytest.raises(ConfigError, match="sampling.prompts"):
            job(tmp_path, sampling={"every_n_steps": 2, "prompts": [prompt]})


awkward = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=awkward, name=awkward, extra=awkward)
@example(model="~0", name="0", extra="0")  # "~user" of no user here: pathlib's expanduser raised (found by CI)
def test_awkward_strings_round_trip_through_toml(tmp_path: Path, data: Path, model: str, name: str, extra: str) -> None:
    # quotes, backslashes, newlines, '#', '=' and any unicode: written by the toml filter, read back equal
    j = job(
        tmp_path,
        base_model=model,
        backend_args={"kohya": {"metadata_title": name, "training_comment": extra + ' "#=\\\n'}},
    )
    config = config_of(render(j)[0])
    assert config["pretrained_model_name_or_path"] == model
    assert config["metadata_title"] == name
    assert config["training_comment"] == extra + ' "#=\\\n'


def test_preflight_catches_bad_input_before_anything_launches(tmp_path: Path) -> None:
    with pytest.raises(LoraforgeError, match="dataset folder .* does not exist"):
        preflight(job(tmp_path, dataset=str(tmp_path / "missing")), "kohya")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoraforgeError, match="has no images"):
        preflight(job(tmp_path, dataset=str(tmp_path / "empty")), "kohya")
    make_images(tmp_path / "data", {"a.png": None})
    with pytest.raises(LoraforgeError, match="base model /nowhere/model.safetensors does not exist"):
        preflight(job(tmp_path, base_model="/nowhere/model.safetensors"), "kohya")
    with pytest.raises(LoraforgeError, match="kohya backend is not set up") as info:
        preflight(job(tmp_path), "kohya")
    assert "loraforge setup kohya" in (info.value.hint or "")
    with pytest.raises(LoraforgeError, match="cannot tell the model family"):
        preflight(job(tmp_path, family=None, base_model="someone/mystery-model"), "kohya")
    with pytest.raises(ConfigError, match="network.rank: got 0"):
        job(tmp_path, network={"rank": 0})
    with pytest.raises(ConfigError, match="family: got 'sd2'"):
        job(tmp_path, family="sd2")


def test_preflight_reports_a_broken_environment(tmp_path: Path) -> None:
    make_images(tmp_path / "data", {"a.png": None})
    save_env(BackendEnv("kohya", Path("/no/such/python"), root=tmp_path))
    with pytest.raises(LoraforgeError, match="no longer exists"):
        preflight(job(tmp_path), "kohya")


def test_check_names_a_missing_checkout_and_changes_nothing(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.touch()
    env = BackendEnv("kohya", python, root=tmp_path / "sd-scripts")
    (problem,) = base.get("kohya").check(env)
    assert "sd-scripts not found at" in problem.message and "--sd-scripts DIR" in (problem.fix or "")
    assert not (tmp_path / "sd-scripts").exists()
