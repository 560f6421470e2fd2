"""SimpleTuner for real on a tiny SDXL model built at test time (CPU, a few steps, about half a minute a run)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.events import Checkpoint, Event, Failure, Finished, Phase, Progress, read_events

pytestmark = pytest.mark.integration

SETUP = "`loraforge setup simpletuner` (or `loraforge setup simpletuner --venv EXISTING_VENV`)"


@pytest.fixture
def st_env(real_registry: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from backends.simpletuner import SimpleTunerBackend
    from orchestrator.envs import load_registry

    env = load_registry().get("simpletuner")
    if env is None or not env.python.exists():
        pytest.skip(f"SimpleTuner is not set up on this machine: run {SETUP}")
    problems = SimpleTunerBackend().check(env)
    if problems:
        pytest.skip(f"SimpleTuner environment not usable ({problems[0].message}): run {SETUP}")
    return env


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


def tiny_job(st_env, tiny_root: Path, tmp_path: Path, *, steps: int = 6):  # type: ignore[no-untyped-def]
    from orchestrator.job import build_job
    from orchestrator.tiny import tiny_sdxl
    from orchestrator.tiny.dataset import make_dataset

    model = tiny_sdxl(st_env.python, root=tiny_root)  # built once per session, in the test's temp folder
    data = make_dataset(tmp_path / "data", count=4, size=128)
    return build_job(
        {
            "name": "tiny-st",
            "base_model": str(model),
            "dataset": str(data),  # family inferred from model_index.json
            "network": {"rank": 4},
            "training": {"steps": steps, "resolution": 128, "precision": "fp32", "gradient_checkpointing": False},
            "saving": {"every_n_steps": 3},
            "output": {"dir": str(tmp_path / "runs")},
        }
    )


def test_train_tiny_sdxl(st_env, tiny_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from safetensors import safe_open

    from orchestrator.training import run_training

    job = tiny_job(st_env, tiny_root, tmp_path)
    seen: list[Event] = []
    outcome = run_training(job, "simpletuner", handlers=[seen.append])
    assert outcome.ok, outcome.failure
    steps = [e for e in seen if isinstance(e, Progress)]
    assert [e.step for e in steps] == [1, 2, 3, 4, 5, 6] and {e.total for e in steps} == {6}  # one per step
    assert all(e.loss is not None and 0 < e.loss < 10 for e in steps)
    assert [e.name for e in seen if isinstance(e, Phase)] == [
        "setup",
        "loading",
        "caching",
        "training",
        "saving",
        "done",
    ]
    assert [e.step for e in seen if isinstance(e, Checkpoint)] == [3, 6]
    assert isinstance(seen[-1], Finished)
    # Webhooks carried the progress: exact losses, not tqdm's two decimals.
    assert any(e.loss is not None and round(e.loss, 2) != e.loss for e in steps)
    lora = outcome.lora
    assert lora is not None and lora == outcome.run.output / "tiny-st.safetensors"
    with safe_open(str(lora), "np") as f:  # the final file is in the Kohya layout by default (saving.format)
        keys = list(f.keys())
        downs = [k for k in keys if k.endswith(".lora_down.weight")]
        assert downs and all(k.startswith("lora_unet_") for k in keys)
        assert {f.get_tensor(k).shape[0] for k in downs} == {4}  # rank
        assert f.metadata()["loraforge_backend"] == "simpletuner"
    assert read_events(outcome.run.events_file)[-1] == seen[-1]
    assert (outcome.run.logs / "stderr.log").stat().st_size > 0
    # The run's webhook secret is in one owner-only file and nowhere else in the run folder (logs, command, config).
    hooks = outcome.run.rendered / "webhooks.json"
    assert stat.S_IMODE(hooks.stat().st_mode) == 0o600
    secret = json.loads(hooks.read_text())[0]["auth_token"].encode()
    holders = [p for p in outcome.run.path.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert holders == [hooks]


def test_killed_mid_run_then_resumed(st_env, tiny_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL the trainer once checkpoint-3 is saved: a clear failure, logs and state kept; then
    `loraforge resume` continues at step 3 (never from 0) and finishes at 6."""
    from orchestrator.launch import Child
    from orchestrator.training import run_training

    job = tiny_job(st_env, tiny_root, tmp_path)
    child: list[Child] = []

    def kill_after_first_checkpoint(event: Event) -> None:
        if isinstance(event, Checkpoint) and event.step == 3:
            os.kill(child[0].pid, signal.SIGKILL)

    outcome = run_training(job, "simpletuner", handlers=[kill_after_first_checkpoint], on_start=child.append)
    assert outcome.returncode == 128 + signal.SIGKILL
    assert isinstance(outcome.failure, Failure) and outcome.failure.kind == "killed"
    assert "resume" in (outcome.failure.hint or "")
    run = outcome.run
    assert run.state()["status"] == "failed"
    assert (run.logs / "stderr.log").stat().st_size > 0 and (run.logs / "stdout.log").exists()
    assert (run.output / "simpletuner" / "checkpoint-3").is_dir()
    assert max(e.step for e in read_events(run.events_file) if isinstance(e, Progress)) == 3

    # The resumed half runs with its webhook port taken by another program, so its progress must come from
    # SimpleTuner's own output (two-decimal losses from the tqdm bar).
    before = len(read_events(run.events_file))
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "resume", str(run.path), "--json"],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "LORAFORGE_WEBHOOK_PORT": str(holder.getsockname()[1])},
        )
    finally:
        holder.close()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resumed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert any(e["event"] == "log" and "from SimpleTuner's output instead" in e["text"] for e in resumed)
    progress = [e for e in resumed if e["event"] == "progress"]
    losses = {e["step"]: e["loss"] for e in progress}
    assert [e["step"] for e in progress] == [4, 5, 6]  # picked up after the saved step, each step once
    assert all(round(loss, 2) == loss for loss in losses.values())
    assert [e["step"] for e in resumed if e["event"] == "checkpoint"] == [6]
    assert resumed[-1]["event"] == "finished"
    assert run.state()["resumed_from"] == 3 and run.state()["status"] == "finished"
    assert len(read_events(run.events_file)) > before  # one events.jsonl for the whole story
    assert (run.output / "tiny-st.safetensors").exists()


def test_setup_registers_an_existing_venv(st_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.envs import load_registry

    venv = st_env.python.parent.parent
    monkeypatch.setenv("LORAFORGE_HOME", str(tmp_path / "home"))
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "setup", "simpletuner", "--venv", str(venv)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    env = load_registry()["simpletuner"]
    assert env.python == st_env.python and not env.managed
    assert env.versions["simpletuner"] == "4.10.1" and env.versions["transformers"] == "5.22.2"
    assert env.versions["cuda"]  # probed once here, so rendering knows whether the CPU-only settings apply
    from backends.simpletuner import SimpleTunerBackend

    assert SimpleTunerBackend().check(env) == []  # what `loraforge doctor` shows as ok


def test_unknown_backend_args_rejected_before_launch(st_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Option names come from the installed SimpleTuner's own registry; everything loraforge renders is in it."""
    from backends.simpletuner import SimpleTunerBackend, known_options
    from orchestrator.dataset.model import load_dataset
    from orchestrator.envs import resolve_runtime
    from orchestrator.errors import LoraforgeError
    from orchestrator.job import build_job
    from orchestrator.runs import create_run
    from orchestrator.tiny.dataset import make_dataset

    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    data = make_dataset(tmp_path / "data", count=2, size=64)
    base = {
        "name": "t", "base_model": str(model), "dataset": str(data), "family": "sdxl", "training": {"steps": 2},
        "output": {"dir": str(tmp_path / "runs")},
    }  # fmt: skip
    env = resolve_runtime(st_env)
    names = known_options(st_env.python)
    for network in ("lora", "lokr"):
        job = build_job({**base, "network": {"type": network}})
        rendered = SimpleTunerBackend().render(job, load_dataset(data), create_run(job, "simpletuner"), env)
        assert names and set(rendered.values) <= names, set(rendered.values) - (names or set())
    typo = build_job({**base, "backend_args": {"simpletuner": {"lerning_rate": 1e-4}}})
    with pytest.raises(LoraforgeError) as info:
        SimpleTunerBackend().render(typo, load_dataset(data), create_run(typo, "simpletuner"), env)
    assert "lerning_rate" in info.value.message and "learning_rate" in info.value.message


# Loads a LyCORIS file in Kohya's names (lora_unet_ + the module path) into the tiny SDXL's diffusers UNet with the
# LyCORIS library (in SimpleTuner's environment) and prints how many modules matched and how much the output moved.
LOAD_LYCORIS = """
import sys, torch
from diffusers import UNet2DConditionModel
from lycoris import LycorisNetwork, create_lycoris_from_weights
from safetensors.torch import load_file

unet = UNet2DConditionModel.from_pretrained(sys.argv[1], subfolder="unet").eval()
config = unet.config
torch.manual_seed(0)
sample = torch.randn(1, config.in_channels, 16, 16)
context = torch.randn(1, 4, config.cross_attention_dim)
text = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
added = {"text_embeds": torch.randn(1, text), "time_ids": torch.zeros(1, 6)}
with torch.no_grad():
    before = unet(sample, 10, context, added_cond_kwargs=added).sample
weights = load_file(sys.argv[2])
LycorisNetwork.apply_preset({"lora_prefix": "lora_unet"})
network, _ = create_lycoris_from_weights(1.0, sys.argv[2], unet, weights_sd=weights)
network.apply_to()
network.load_state_dict(weights, strict=False)
with torch.no_grad():
    after = unet(sample, 10, context, added_cond_kwargs=added).sample
modules = {key.split(".")[0] for key in weights}
print(f"modules={len(modules)} applied={len(network.loras)} change={float((after - before).abs().max())}")
"""


@pytest.mark.parametrize(
    ("network", "part"), [("locon", ".lora_down.weight"), ("loha", ".hada_w1_a"), ("lokr", ".lokr_w1")]
)
def test_lycoris_networks_train_and_load(st_env, tiny_root: Path, tmp_path: Path, network: str, part: str) -> None:  # type: ignore[no-untyped-def]
    """network.type locon/loha/lokr trains through SimpleTuner's LyCORIS mode; the LoRA loads into the U-Net (every
    module it names) and changes its output, which only trained weights can do (LyCORIS starts at no change)."""
    from safetensors import safe_open

    from orchestrator.training import run_training

    job = tiny_job(st_env, tiny_root, tmp_path, steps=3)
    job = job.model_copy(update={"network": job.network.model_copy(update={"type": network})})
    outcome = run_training(job, "simpletuner")
    assert outcome.ok, outcome.failure
    assert outcome.lora is not None
    with safe_open(str(outcome.lora), "np") as f:
        keys = list(f.keys())
        assert all(k.startswith("lora_unet_") for k in keys) and any(k.endswith(part) for k in keys)
        assert json.loads(f.metadata()["loraforge_network"])["type"] == network
    script = tmp_path / "load_lycoris.py"
    script.write_text(LOAD_LYCORIS)
    result = subprocess.run(
        [str(st_env.python), str(script), job.base_model, str(outcome.lora)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    found = dict(item.split("=") for item in result.stdout.split()[-3:])
    assert int(found["modules"]) == int(found["applied"]) > 0
    assert float(found["change"]) > 0
