"""SimpleTuner on SD3.5, Chroma, Lumina 2, Qwen-Image and FLUX.2 without the trainer: `loraforge render` in-process
for each family, the flavour and text length each needs, what a family ignores (a note, never dropped silently), and
the parser on the real runs' logs (tests/fixtures/simpletuner/<family>)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.simpletuner import SimpleTunerBackend, SimpleTunerLogParser
from backends.simpletuner.families import FLOW_MATCHING, model_flavour
from orchestrator.cli import main
from orchestrator.dataset.model import load_dataset
from orchestrator.envs import BackendEnv, resolve_runtime
from orchestrator.errors import LoraforgeError
from orchestrator.events import Checkpoint, Event, Failure, Phase, Progress
from orchestrator.job import JobSpec, build_job
from orchestrator.runs import create_run
from orchestrator.tiny.dataset import make_dataset

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "simpletuner"
NEW = ["sd3", "chroma", "lumina2", "qwen_image", "flux2"]
# model_index.json of each family's diffusers folder, as the tiny builders (and the published models) write it
INDEX = {
    "sd3": {"_class_name": "StableDiffusion3Pipeline"},
    "chroma": {"_class_name": "ChromaPipeline"},
    "lumina2": {"_class_name": "Lumina2Pipeline"},
    "qwen_image": {
        "_class_name": "QwenImagePipeline",
        "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
    },
    "flux2": {"_class_name": "Flux2Pipeline", "text_encoder": ["transformers", "Mistral3ForConditionalGeneration"]},
    "sdxl": {"_class_name": "StableDiffusionXLPipeline"},
    "sd15": {"_class_name": "StableDiffusionPipeline"},
}
CPU = resolve_runtime(BackendEnv("simpletuner", Path("/venv/bin/python"), versions={"cuda": "no"}), environ={})


def model_folder(root: Path, family: str, index: dict | None = None, layers: int | None = None) -> Path:
    folder = root / f"model-{family}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(index or INDEX[family]))
    if layers is not None:
        (folder / "transformer").mkdir(exist_ok=True)
        (folder / "transformer" / "config.json").write_text(json.dumps({"num_layers": layers}))
    return folder


def captioned(folder: Path) -> Path:
    make_dataset(folder, count=3, size=128)
    for caption in folder.glob("*.txt"):
        caption.write_text("ohwx, " + caption.read_text())
    return folder


def job_for(tmp_path: Path, family: str, **sections: dict) -> JobSpec:
    data = tmp_path / "data"
    if not data.exists():
        captioned(data)
    layer: dict = {
        "name": "fam",
        "base_model": str(model_folder(tmp_path, family)),
        "family": family,  # render takes the family as preflight resolved it
        "trigger": "ohwx",
        "dataset": str(data),
        "training": {"steps": 3, "resolution": 128},
        "saving": {"format": "diffusers"},
        "output": {"dir": str(tmp_path / "runs")},
    }
    for key, value in sections.items():
        layer[key] = {**layer.get(key, {}), **value}
    return build_job(layer)


def render(job: JobSpec, env: BackendEnv = CPU) -> tuple[dict, list[str]]:
    rendered = SimpleTunerBackend().render(job, load_dataset(job.dataset), create_run(job, "simpletuner"), env)
    return json.loads(rendered.files["config"].read_text()), rendered.notes


# --- `loraforge render JOB --family F --backend simpletuner` -------------------------------------------------------


def write_job(tmp_path: Path, family: str, **extra: object) -> Path:
    job = {
        "name": "cli",
        "base_model": str(model_folder(tmp_path, family)),
        "dataset": str(captioned(tmp_path / "data")),
        "trigger": "ohwx",
        "training": {"steps": 3, "resolution": 128},
        **extra,
    }
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(job))  # YAML reads JSON
    return path


@pytest.mark.parametrize("family", NEW)
def test_render_writes_model_family_and_flavour(family: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    job = write_job(tmp_path, family, saving={"format": "diffusers"})
    out = tmp_path / "out"
    argv = ["render", str(job), "--family", family, "--backend", "simpletuner", "-o", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    config = json.loads((out / "rendered" / "config.json").read_text())
    assert config["model_family"] == family
    assert config.get("model_flavour") == {"qwen_image": "v1.0", "flux2": "dev"}.get(family)
    assert config.get("tokenizer_max_length") == {"sd3": 154, "chroma": 512, "lumina2": 256}.get(family)
    assert config["pretrained_model_name_or_path"] == str(tmp_path / f"model-{family}")
    assert "simpletuner.train" in capsys.readouterr().out  # the command line it would run


@pytest.mark.parametrize("family", ["sd3", "lumina2", "qwen_image", "flux2"])
def test_kohya_layout_asked_where_loraforge_cannot_convert_is_refused_before_training(
    family: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    job = write_job(tmp_path, family)  # saving.format defaults to kohya
    assert main(["render", str(job), "--family", family, "--backend", "simpletuner", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"SimpleTuner's {family} LoRA in Kohya's layout" in err and "saving.format=diffusers" in err


def test_chroma_keeps_the_kohya_layout_default(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    job = write_job(tmp_path, "chroma")
    assert main(["render", str(job), "--family", "chroma", "--backend", "simpletuner", "-o", str(tmp_path / "o")]) == 0


def test_sd15_is_still_refused_with_its_reason(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    job = write_job(tmp_path, "sd15")
    assert main(["render", str(job), "--family", "sd15", "--backend", "simpletuner", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot train sd15" in err and "safety_checker" in err and "--backend kohya" in err


def test_the_family_is_inferred_from_the_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    job = write_job(tmp_path, "qwen_image", saving={"format": "diffusers"})
    assert main(["render", str(job), "--backend", "simpletuner", "-o", str(tmp_path / "o")]) == 0
    config = json.loads((tmp_path / "o" / "rendered" / "config.json").read_text())
    assert (config["model_family"], config["model_flavour"]) == ("qwen_image", "v1.0")


def test_backend_lists_the_families_it_trains() -> None:
    backend = SimpleTunerBackend()
    assert set(NEW) <= backend.families and "sd15" in backend.refused
    assert backend.families - {"sdxl"} == FLOW_MATCHING


# --- flavours ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_model", "family", "flavour"),
    [
        ("Qwen/Qwen-Image", "qwen_image", "v1.0"),
        ("Qwen/Qwen-Image-2512", "qwen_image", "v2.0"),
        ("Qwen/Qwen-Image-2.1", "qwen_image", "v2.1"),
        ("black-forest-labs/FLUX.2-dev", "flux2", "dev"),
        ("black-forest-labs/FLUX.2-klein-base-4B", "flux2", "klein-4b"),
        ("black-forest-labs/FLUX.2-klein-base-9B", "flux2", "klein-9b"),
    ],
)
def test_flavour_of_a_hub_id(base_model: str, family: str, flavour: str) -> None:
    notes: list[str] = []
    assert model_flavour(base_model, family, notes) == flavour and notes == []


def test_flavour_of_a_folder_from_its_text_encoder(tmp_path: Path) -> None:
    notes: list[str] = []
    qwen3vl = {"_class_name": "QwenImagePipeline", "text_encoder": ["transformers", "Qwen3VLForConditionalGeneration"]}
    assert model_flavour(str(model_folder(tmp_path / "a", "qwen_image", qwen3vl)), "qwen_image", notes) == "v2.1"
    assert model_flavour(str(model_folder(tmp_path / "b", "flux2")), "flux2", notes) == "dev"
    klein = {"_class_name": "Flux2KleinPipeline", "text_encoder": ["transformers", "Qwen3ForCausalLM"]}
    assert model_flavour(str(model_folder(tmp_path / "c", "flux2", klein, layers=5)), "flux2", notes) == "klein-4b"
    assert model_flavour(str(model_folder(tmp_path / "d", "flux2", klein, layers=8)), "flux2", notes) == "klein-9b"
    assert notes == []


def test_an_unknown_model_gets_the_default_flavour_and_a_note(tmp_path: Path) -> None:
    notes: list[str] = []
    assert model_flavour("someone/my-qwen-finetune", "qwen_image", notes) == "v1.0"
    assert "backend_args.simpletuner.model_flavour" in notes[0]


def test_an_edit_model_is_refused(tmp_path: Path) -> None:
    edit = {
        "_class_name": "QwenImageEditPlusPipeline",
        "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
    }
    with pytest.raises(LoraforgeError, match="edit model"):
        model_flavour(str(model_folder(tmp_path, "qwen_image", edit)), "qwen_image", [])


def test_a_flavour_in_backend_args_wins(tmp_path: Path) -> None:
    config, _ = render(job_for(tmp_path, "flux2", backend_args={"simpletuner": {"model_flavour": "klein-9b"}}))
    assert config["model_flavour"] == "klein-9b"


def test_flux2_dev_says_where_its_text_encoder_comes_from(tmp_path: Path) -> None:
    _, notes = render(job_for(tmp_path, "flux2"))
    assert any("mistralai/Mistral-Small-3.1-24B-Instruct-2503" in n and "HF_HUB_CACHE" in n for n in notes)


def test_qwen_image_21_says_what_it_fetches(tmp_path: Path) -> None:
    job = job_for(tmp_path, "qwen_image", backend_args={"simpletuner": {"model_flavour": "v2.1"}})
    _, notes = render(job)
    assert any("Qwen-Image 2.1" in n and "hub" in n for n in notes)


# --- what a family ignores -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", NEW)
def test_snr_and_noise_offset_on_flow_matching_families_are_notes(family: str, tmp_path: Path) -> None:
    config, notes = render(job_for(tmp_path, family, training={"min_snr_gamma": 5, "noise_offset": 0.05}))
    assert not {"snr_gamma", "noise_offset", "offset_noise"} & set(config)
    assert any(n.startswith("training.min_snr_gamma=5.0") and "flow-matching" in n for n in notes)
    assert any(n.startswith("training.noise_offset=0.05") and "flow-matching" in n for n in notes)


def test_sdxl_noise_offset_is_switched_on(tmp_path: Path) -> None:
    """SimpleTuner reads noise_offset only as the magnitude: offset_noise turns it on."""
    config, _ = render(job_for(tmp_path, "sdxl", training={"min_snr_gamma": 5, "noise_offset": 0.05}))
    assert (config["snr_gamma"], config["noise_offset"], config["offset_noise"]) == (5.0, 0.05, True)
    config, _ = render(job_for(tmp_path / "plain", "sdxl"))
    assert config["noise_offset"] == 0.0 and "offset_noise" not in config


def test_qwen_image_batches_above_one_are_flagged(tmp_path: Path) -> None:
    config, notes = render(job_for(tmp_path, "qwen_image", training={"batch_size": 2}))
    assert config["train_batch_size"] == 2
    assert any(n.startswith("training.batch_size=2") and "gradient_accumulation" in n for n in notes)


def test_lycoris_on_a_new_family_is_a_standard_lora_and_says_so(tmp_path: Path) -> None:
    config, notes = render(job_for(tmp_path, "sd3", network={"type": "lokr"}))
    assert config["lora_type"] == "standard"
    assert any("network.type=lokr" in n for n in notes)


def test_the_trigger_is_the_dataset_instance_prompt(tmp_path: Path) -> None:
    job = job_for(tmp_path, "lumina2")
    rendered = SimpleTunerBackend().render(job, load_dataset(job.dataset), create_run(job, "simpletuner"), CPU)
    datasets = json.loads(rendered.files["multidatabackend"].read_text())
    assert datasets[0]["instance_prompt"] == "ohwx" and datasets[0]["vae_cache_ondemand"] is True


# --- the parser on the real runs ------------------------------------------------------------------------------------


def replay(name: str, order: tuple[str, ...] = ("stdout", "stderr")) -> list[Event]:
    parser = SimpleTunerLogParser()
    events: list[Event] = []
    for stream in order:
        events += parser.feed((FIXTURES / name / f"{stream}.log").read_bytes(), stream)
    return events + parser.finish(0)


RUNS = {"sd3": (4, [2, 4]), "chroma": (4, [2, 4]), "lumina2": (3, [2]), "qwen_image": (3, [2]), "flux2": (3, [2])}


@pytest.mark.parametrize("family", NEW)
@pytest.mark.parametrize("order", [("stdout", "stderr"), ("stderr", "stdout")])
def test_each_real_run_ends_with_saving(family: str, order: tuple[str, ...]) -> None:
    """Only SDXL prints "Model weights saved" for the final LoRA; the model card's dataset overview, logged inside
    the final save, says "saving" for every family, whichever stream is read first."""
    events = replay(family, order)
    steps, checkpoints = RUNS[family]
    assert [e.step for e in events if isinstance(e, Progress)] == list(range(1, steps + 1))
    assert all(e.loss is not None for e in events if isinstance(e, Progress))
    assert [e.step for e in events if isinstance(e, Checkpoint)] == checkpoints
    phases = [e.name for e in events if isinstance(e, Phase)]
    assert phases[-1] == "saving" and "training" in phases
    last_step = max(i for i, e in enumerate(events) if isinstance(e, Progress))
    assert last_step < events.index(Phase("saving"))  # every step is read before the save
    assert not any(isinstance(e, Failure) for e in events)


def test_live_order_gives_the_last_step_before_saving() -> None:
    """Lines as a live run interleaves them: the last step's bar drawn once, then the final save's overview."""
    parser = SimpleTunerLogParser()
    bar = "Epoch 1/1, Steps: {pct}%|##| {s}/3 [00:0{s}<00:00, 1.00s/it, lr=0.0001, step_loss={loss}]\r"
    events = parser.feed(b"[RANK 0] 2026-12-07 09:12:01,000 [INFO] Loading diffusion model from /m\n", "stdout")
    for step, loss in ((1, "1.5"), (2, "1.4")):
        events += parser.feed(bar.format(pct=33 * step, s=step, loss=loss).encode() * 2, "stderr")
    events += parser.feed(bar.format(pct=100, s=3, loss="1.3").encode(), "stderr")  # drawn once
    events += parser.feed(b"[RANK 0] 2026-12-07 09:12:02,215 [INFO] [RANK 0] - Repeats: 0\n", "stdout")
    assert [type(e).__name__ for e in events][-2:] == ["Progress", "Phase"]
    assert events[-2] == Progress(step=3, total=3, epoch=1, epochs=1, loss=1.3, lr=0.0001, it_per_s=1.0, eta_s=0.0)
    assert events[-1] == Phase("saving") and parser.finish(0) == []


def test_a_failed_run_never_says_saving() -> None:
    parser = SimpleTunerLogParser()
    events: list[Event] = []
    for stream in ("stdout", "stderr"):
        events += parser.feed((FIXTURES / "sd3" / f"fail.{stream}.log").read_bytes(), stream)
    events += parser.finish(1)
    assert Phase("saving") not in events and isinstance(events[-1], Failure)


def lora_file(path: Path, modules: list[str], metadata: dict[str, str] | None = None) -> Path:
    import numpy as np

    from orchestrator.lora.safetensors_io import Tensor, write

    rng = np.random.default_rng(0)
    tensors = {}
    for module in modules:
        tensors[f"{module}.lora_A.weight"] = Tensor("F32", [4, 8], rng.standard_normal((4, 8)).astype("<f4").tobytes())
        tensors[f"{module}.lora_B.weight"] = Tensor("F32", [8, 4], rng.standard_normal((8, 4)).astype("<f4").tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    return write(path, tensors, metadata or {"format": "pt"})


def finished_run(tmp_path: Path, family: str, *, checkpoint_config: str | None = None, **network: object):  # type: ignore[no-untyped-def]
    """A run folder as SimpleTuner 4.10.1 leaves it: the final LoRA with {"format": "pt"} only and, optionally, a
    complete checkpoint whose copy carries PEFT's config."""
    job = job_for(tmp_path, family, network={"rank": 4, **network})
    run = create_run(job, "simpletuner")
    out = run.output / "simpletuner"
    modules = ["transformer.transformer_blocks.0.attn.to_q", "transformer.transformer_blocks.0.attn.to_out.0"]
    if family == "sdxl":
        modules = ["unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"]
    if checkpoint_config is not None:
        (out / "checkpoint-2").mkdir(parents=True)
        (out / "checkpoint-2" / "training_state.json").write_text('{"global_step": 2}')
        lora_file(
            out / "checkpoint-2" / "pytorch_lora_weights.safetensors",
            modules,
            {"lora_adapter_metadata": checkpoint_config},
        )
        (out / "checkpoint-2" / ".guard").write_text("complete")
    lora_file(out / "pytorch_lora_weights.safetensors", modules)
    return job, run, out


def test_the_final_lora_gets_its_alpha_back_from_the_checkpoint(tmp_path: Path) -> None:
    from orchestrator.lora.safetensors_io import read_header

    config = json.dumps({"transformer.r": 4, "transformer.lora_alpha": 2.0, "transformer.target_modules": ["to_q"]})
    job, run, out = finished_run(tmp_path, "lumina2", checkpoint_config=config, alpha=2)
    before = (out / "pytorch_lora_weights.safetensors").read_bytes()
    lora = SimpleTunerBackend().collect(job, run).lora
    assert lora == out / "pytorch_lora_weights.loraforge.safetensors"
    assert read_header(lora)[1]["lora_adapter_metadata"] == config
    assert (out / "pytorch_lora_weights.safetensors").read_bytes() == before  # the trainer's file as it wrote it
    written = lora.stat().st_mtime_ns
    assert SimpleTunerBackend().collect(job, run).lora == lora and lora.stat().st_mtime_ns == written  # once


def test_without_a_checkpoint_the_config_comes_from_the_job(tmp_path: Path) -> None:
    from orchestrator.lora.safetensors_io import read_header

    job, run, _ = finished_run(tmp_path, "qwen_image", alpha=2)
    lora = SimpleTunerBackend().collect(job, run).lora
    assert lora is not None
    config = json.loads(read_header(lora)[1]["lora_adapter_metadata"])
    assert (config["transformer.r"], config["transformer.lora_alpha"]) == (4, 2.0)
    assert config["transformer.target_modules"] == [
        "transformer_blocks.0.attn.to_out.0",
        "transformer_blocks.0.attn.to_q",
    ]


def test_a_kohya_export_keeps_the_trained_alpha(tmp_path: Path) -> None:
    """SDXL's default Kohya layout: the alpha written is the job's (2), not the rank (4) the bare file implies."""
    from orchestrator.lora.convert import scalar
    from orchestrator.lora.finalize import finalize_lora
    from orchestrator.lora.safetensors_io import read

    job, run, _ = finished_run(tmp_path, "sdxl", alpha=2)
    job = job.model_copy(update={"saving": job.saving.model_copy(update={"format": "kohya"})})
    lora = SimpleTunerBackend().collect(job, run).lora
    assert lora is not None
    tensors, _ = read(finalize_lora(job, lora, tmp_path / "final.safetensors", {}))
    alphas = {scalar(t) for key, t in tensors.items() if key.endswith(".alpha")}
    assert alphas == {2.0}


def test_a_lora_that_carries_its_config_is_collected_as_it_is(tmp_path: Path) -> None:
    job, run, out = finished_run(tmp_path, "sd3")
    lora_file(out / "pytorch_lora_weights.safetensors", ["transformer.x.to_q"], {"lora_adapter_metadata": "{}"})
    assert SimpleTunerBackend().collect(job, run).lora == out / "pytorch_lora_weights.safetensors"


def test_collect_finds_the_lora_every_family_writes(tmp_path: Path) -> None:
    """SimpleTuner writes output/pytorch_lora_weights.safetensors for every family (the fixtures' READMEs)."""
    job = job_for(tmp_path, "flux2")
    run = create_run(job, "simpletuner")
    out = run.output / "simpletuner"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "training_state.json").write_text('{"global_step": 2}')
    (out / "checkpoint-2" / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    (out / "checkpoint-2" / ".guard").write_text("complete")
    (out / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    artifacts = SimpleTunerBackend().collect(job, run)
    assert artifacts.lora == out / "pytorch_lora_weights.safetensors"
    assert artifacts.resume is not None and artifacts.resume.step == 2
