"""The SimpleTuner backend: JobSpec -> config.json + multidatabackend.json, ``python -m simpletuner.train``.

Top to bottom: versions and pins, device and CPU-only settings, the option mapping, rendering, the command, the
environment (setup and check), the side channel (raw webhooks to a loopback receiver), the stderr parser (the
fallback when webhooks are silent) and collection of the LoRA and checkpoints.

Facts this module relies on (SimpleTuner 4.10.1, verified on CPU; see the project's reference notes):
- it needs Python >= 3.12 and transformers 5.22.2 (5.23 breaks every run); its SD 1.x path is broken;
- on CPU: ``vae_cache_ondemand`` (else a CUDA pin_memory path crashes), the model's own VAE (the default is a hub
  id), validation off (previews fetch a hub model), optimi-adamw (adamw_schedulefree crashes), no mixed precision;
- the aspect bucket cache is written into the image folder itself, so each run trains from its own folder of
  links to the dataset: a stale cache from another run can never meet a changed config;
- ``CONFIG_BACKEND=json CONFIG_PATH=...`` is honoured and key=value CLI overrides are not; ``resume_from_checkpoint``
  takes a checkpoint folder name inside ``output_dir``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from backends.base import Artifacts, Launch, Problem, Rendered, Resume
from orchestrator.distributed import RankWatch, free_port, split_rank, with_rank
from orchestrator.envs import (
    BackendEnv,
    find_python,
    home,
    load_registry,
    package_versions,
    python_version,
    venv_python,
)
from orchestrator.errors import BackendNotReady, LoraforgeError
from orchestrator.events import Checkpoint, Event, Failure, Log, Phase, Progress
from orchestrator.job import JobSpec
from orchestrator.render import render_template, write_rendered
from orchestrator.steps import held_out_count, validation_interval
from orchestrator.watch import MetricsFile, SampleFolder, Watched

VERSION = "4.10.1"
PYTHON_MIN = (3, 12)
PYTHON_MAX = (3, 15)  # exclusive
PINS = {"torch": "2.13.0", "torchvision": "0.28.0", "transformers": "5.22.2"}
VENV_SIZE_GB = 7.0  # measured: the CPU install with torch 2.13 and its wheels
LORA_FILE = "pytorch_lora_weights.safetensors"

OPTIMIZERS = {  # JobSpec optimizer -> SimpleTuner optimizer (GPU); CPU swaps adamw for optimi-adamw
    "adamw": "adamw_bf16",
    "adamw8bit": "bnb-adamw8bit",
    "adafactor": "torch-adafactor",
    "prodigy": "prodigy",
    "lion": "optimi-lion",
    "sgd": "optimi-sgd",
}
PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}


# --- device -----------------------------------------------------------------------------------------------------


def target_device() -> str:
    """ "cuda" or "cpu": $LORAFORGE_SIMPLETUNER_DEVICE, else what setup probed in the env's torch, else nvidia-smi."""
    override = os.environ.get("LORAFORGE_SIMPLETUNER_DEVICE", "").lower()
    if override in ("cpu", "cuda"):
        return override
    env = load_registry().get("simpletuner")
    if env is not None and "cuda" in env.versions:
        return "cpu" if env.versions["cuda"] in ("", "no") else "cuda"
    return "cuda" if _nvidia_smi_works() else "cpu"


def _nvidia_smi_works() -> bool:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


# --- the option mapping -----------------------------------------------------------------------------------------


def _layout(workdir: Path) -> tuple[Path, Path]:
    """(base, output_dir): inside a run folder, rendered/ sits beside output/; elsewhere everything goes in workdir."""
    base = workdir.parent if workdir.name == "rendered" else workdir
    return base, base / "output" / "simpletuner"


def output_dir(run_path: Path) -> Path:
    return run_path / "output" / "simpletuner"


def map_options(
    job: JobSpec, *, device: str, offline: bool, data_dir: Path, cache: Path, out: Path
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """(config.json values, multidatabackend.json entries, notes on what could not be expressed)."""
    t, n, s = job.training, job.network, job.saving
    notes: list[str] = []
    cpu = device == "cpu"
    local_model = Path(job.base_model).expanduser().is_dir()

    optimizer = OPTIMIZERS.get(t.optimizer)
    if optimizer is None:
        optimizer = "optimi-adamw"
        notes.append(f"training.optimizer={t.optimizer} has no SimpleTuner equivalent; using optimi-adamw")
    if t.optimizer == "adamw" and (cpu or t.precision != "bf16"):
        optimizer = "optimi-adamw" if cpu else "torch-adamw"
    if cpu and optimizer.startswith("bnb-"):
        notes.append(f"training.optimizer={t.optimizer}: bitsandbytes needs CUDA; using optimi-adamw on CPU")
        optimizer = "optimi-adamw"
    precision = PRECISION[t.precision]
    if cpu and precision != "no":
        notes.append(f"training.precision={t.precision}: no mixed precision on CPU; training in fp32")
        precision = "no"

    config: dict[str, Any] = {
        "model_family": job.family,
        "model_type": "lora",
        "lora_type": "standard",
        "lora_rank": n.rank,
        "lora_alpha": job.alpha,
        "pretrained_model_name_or_path": job.base_model,
        "output_dir": str(out),
        "max_train_steps": t.steps or 0,
        "num_train_epochs": 0 if t.steps else (t.epochs or 0),  # explicit steps always decide the length
        "learning_rate": t.learning_rate,
        "lr_scheduler": t.scheduler,
        "lr_warmup_steps": t.warmup_steps,
        "optimizer": optimizer,
        "mixed_precision": precision,
        "base_model_precision": "no_change",
        "train_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation,
        "resolution": t.resolution,
        "resolution_type": "pixel",
        "seed": t.seed,
        "gradient_checkpointing": t.gradient_checkpointing,
        "noise_offset": t.noise_offset or 0.0,
        "report_to": "none",
        "push_to_hub": False,
        "use_ema": False,
    }
    if t.steps and t.epochs:
        notes.append(f"training.epochs={t.epochs} ignored: training.steps={t.steps} decides the length")
    if n.dropout is not None:
        config["lora_dropout"] = n.dropout
    if t.min_snr_gamma is not None:
        config["snr_gamma"] = t.min_snr_gamma
    if s.every_n_steps is not None:
        config["checkpoint_step_interval"] = s.every_n_steps
    if s.keep_last is not None:
        config["checkpoints_total_limit"] = s.keep_last
    if n.type != "lora":
        notes.append(f"network.type={n.type}: LyCORIS through SimpleTuner is not mapped yet; training a standard LoRA")
    if n.args:
        notes.append(f"network.args {sorted(n.args)} are sd-scripts network arguments; not passed to SimpleTuner")
    if t.text_encoder_lr:
        notes.append(f"training.text_encoder_lr={t.text_encoder_lr}: SimpleTuner LoRA trains the UNet only here")
    if not t.cache_latents:
        notes.append("training.cache_latents=false: SimpleTuner always caches VAE latents (on demand on CPU)")

    # CPU-only / offline settings: only where they are needed, never forced on a GPU that is online.
    if cpu or offline:
        if local_model:
            config["pretrained_vae_model_name_or_path"] = job.base_model
        config["validation_disable"] = True
        config["disable_benchmark"] = True
        if job.sampling.every_n_steps:
            why = "on CPU" if cpu else "offline (HF_HUB_OFFLINE)"
            notes.append(f"sampling.every_n_steps={job.sampling.every_n_steps}: SimpleTuner validation is off {why}")
    elif job.sampling.every_n_steps and job.sampling.prompts:
        config["validation_step_interval"] = job.sampling.every_n_steps
        config["validation_prompt"] = job.sampling.prompts[0]
        config["validation_seed"] = job.sampling.seed
        config["validation_num_inference_steps"] = job.sampling.steps
        if len(job.sampling.prompts) > 1:
            notes.append("sampling.prompts: SimpleTuner's config takes one validation prompt; using the first")
    else:
        config["validation_disable"] = True

    if t.validation_split:
        # Held-out images in their own "eval" dataset; SimpleTuner computes their loss every eval_steps_interval and
        # reports it only to a tracker: "simpletuner" writes it to training_metrics.jsonl, which the run watches.
        config["validation_disable"] = False  # the Evaluation object exists only with validation on
        config["eval_steps_interval"] = validation_interval(job)
        config["report_to"] = "simpletuner"
        if cpu or offline:  # validation images stay off: on CPU their pipeline needs >20 GB even for the tiny model
            config["validation_step_interval"] = (t.steps or 0) + 1_000_000

    config.update(job.backend_args.get("simpletuner", {}))

    dataset: dict[str, Any] = {
        "id": "loraforge-images",
        "type": "local",
        "instance_data_dir": str(data_dir),
        "caption_strategy": "textfile",
        "crop": False,
        "resolution": t.resolution,
        "resolution_type": "pixel",
        "minimum_image_size": min(64, t.resolution),
        "repeats": t.repeats - 1,  # SimpleTuner counts extra passes; the JobSpec counts passes
        "cache_dir_vae": str(cache / "vae"),
    }
    if cpu:
        dataset["vae_cache_ondemand"] = True
    text_embeds = {
        "id": "text-embeds",
        "dataset_type": "text_embeds",
        "default": True,
        "type": "local",
        "cache_dir": str(cache / "text"),
    }
    datasets = [dataset, text_embeds]
    if t.validation_split:
        datasets.insert(
            1,
            {
                **dataset,
                "id": "loraforge-eval",
                "dataset_type": "eval",
                "instance_data_dir": str(data_dir.parent / "eval"),
                "cache_dir_vae": str(cache / "vae-eval"),
                "repeats": 0,
            },
        )
    return config, datasets, notes


def held_out(stems: list[str], share: float, seed: int) -> set[str]:
    """The images kept out of training for validation loss: a seeded draw, the same on every render of the job;
    at least one held out and one left to train on."""
    import random

    count = held_out_count(len(stems), share, "simpletuner")
    return set(random.Random(seed).sample(sorted(stems), count)) if count else set()


_OPTIONS: dict[str, frozenset[str] | None] = {}


def known_options(python: Path) -> frozenset[str] | None:
    """The option names of the installed SimpleTuner, read from its field registry's source (nothing imported,
    so this is quick); None where that registry is not found (another SimpleTuner layout): then nothing is checked."""
    if str(python) in _OPTIONS:
        return _OPTIONS[str(python)]
    code = "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('simpletuner').origin))"
    names: frozenset[str] | None = None
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
        sections = Path(out.stdout.strip()) / "simpletuner_sdk/server/services/field_registry/sections"
        if out.returncode == 0 and sections.is_dir():
            found: set[str] = set()
            for source in sections.glob("*.py"):
                found.update(re.findall(r'\bname="([a-z0-9_]+)"', source.read_text(encoding="utf-8")))
            names = frozenset(found) or None
    except (OSError, subprocess.TimeoutExpired):
        names = None
    _OPTIONS[str(python)] = names
    return names


def reject_unknown_options(config: dict[str, Any], python: Path) -> None:
    """Typos in backend_args.simpletuner are caught before launching (SimpleTuner would ignore or fail late)."""
    import difflib

    names = known_options(python)
    if names is None:
        return
    unknown = [key for key in config if key not in names]
    if unknown:
        guesses = [
            f"{key} (did you mean {', '.join(difflib.get_close_matches(key, names, 2)) or '?'})" for key in unknown
        ]
        raise LoraforgeError(
            f"unknown SimpleTuner option(s) in backend_args.simpletuner: {'; '.join(guesses)}",
            "fix or remove them; the names are SimpleTuner's config keys without the leading --",
        )


IMAGE_FILES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
TRAINING_FILES = IMAGE_FILES | {".txt", ".caption"}


LINKED_MARKER = ".loraforge-linked"  # no image suffix: SimpleTuner never trains on it


def link_dataset(source: Path, target: Path, *, keep: Callable[[Path], bool] | None = None) -> int:
    """A fresh per-run folder of the dataset's images and captions: hard links where possible (no copy), else
    copies. Anything else there (a prep manifest, a bucket cache SimpleTuner left for another config) stays out.
    Returns the file count. Only a folder this function made is ever replaced: never the user's own photos."""
    source_r, target_r = source.resolve(), target.resolve()
    if target_r == source_r or source_r in target_r.parents or target_r in source_r.parents:
        raise LoraforgeError(
            f"the dataset {source} and SimpleTuner's per-run image folder {target} overlap",
            "render into a folder outside the dataset (e.g. -o runs/render), or move the dataset",
        )
    if target.exists():
        if not (target / LINKED_MARKER).exists():
            raise LoraforgeError(
                f"{target} exists and was not made by loraforge: it would be replaced by links to the dataset",
                "render into another folder (-o), or move that folder away",
            )
        shutil.rmtree(target)
    count = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in TRAINING_FILES:
            continue
        if any(part.startswith(".") for part in path.relative_to(source).parts):
            continue
        if keep is not None and not keep(path):
            continue
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, dest)
        except OSError:
            shutil.copy2(path, dest)
        count += 1
    target.mkdir(parents=True, exist_ok=True)
    (target / LINKED_MARKER).write_text("made by loraforge: links to the dataset's files; replaced on each run\n")
    return count


# --- the backend ------------------------------------------------------------------------------------------------


class SimpleTunerBackend:
    name = "simpletuner"
    families = frozenset({"sdxl", "flux"})

    def __init__(self) -> None:
        self._channel: _Channel | None = None

    # rendering -----------------------------------------------------------------------------------------------

    def render(self, job: JobSpec, workdir: Path, *, resume: Resume | None = None) -> Rendered:
        refuse_family(job.family)
        base, out = _layout(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        data_dir = base / "data"
        source = Path(job.dataset).expanduser().resolve()
        held = held_out(
            [p.stem for p in source.rglob("*") if p.suffix.lower() in IMAGE_FILES],
            job.training.validation_split,
            job.training.seed,
        )
        if job.training.validation_split and not held:
            raise LoraforgeError(
                f"training.validation_split={job.training.validation_split}: {source} has too few images to hold "
                "any out",
                "add images (two at least), or set training.validation_split=0",
            )
        link_dataset(source, data_dir, keep=lambda p: p.stem not in held)
        if held:
            link_dataset(source, base / "eval", keep=lambda p: p.stem in held)
        config, datasets, notes = map_options(
            job, device=target_device(), offline=_offline(), data_dir=data_dir, cache=base / "cache", out=out
        )
        env = load_registry().get(self.name)
        if env is not None and env.python.exists():
            reject_unknown_options(config, env.python)
        files: dict[str, Path] = {}
        files["multidatabackend"] = write_rendered(
            workdir / "multidatabackend.json",
            render_template("simpletuner/multidatabackend.json.j2", datasets=datasets),
        )
        config["data_backend_config"] = str(files["multidatabackend"])
        if resume is not None:
            if resume.state.parent.resolve() != out.resolve():
                raise LoraforgeError(
                    f"checkpoint {resume.state} is not in this run's SimpleTuner output folder {out}",
                    "resume the run folder the checkpoint belongs to",
                )
            config["resume_from_checkpoint"] = resume.state.name
        if self._channel is not None:
            hooks = [{"webhook_type": "raw", "callback_url": self._channel.url, "log_level": "info"}]
            files["webhooks"] = write_rendered(
                workdir / "webhooks.json", render_template("simpletuner/webhooks.json.j2", hooks=hooks)
            )
            config["webhook_config"] = str(files["webhooks"])
        files["config"] = write_rendered(
            workdir / "config.json", render_template("simpletuner/config.json.j2", config=config)
        )
        if job.distributed.gpus * job.distributed.nodes > 1:
            files["accelerate"], ddp_notes = render_accelerate(job, workdir, config["mixed_precision"])
            notes.extend(ddp_notes)
        for label, expected in (("config", config), ("multidatabackend", datasets)):
            parsed = json.loads(files[label].read_text(encoding="utf-8"))
            if parsed != expected:
                raise LoraforgeError(f"rendered {files[label]} does not match the intended values", "report this bug")
        return Rendered(files=files, notes=notes, values=config)

    def command(self, job: JobSpec, rendered: Rendered, env: BackendEnv) -> Launch:
        """``python -m simpletuner.train`` (one process) or accelerate with an explicit config (several)."""
        # SimpleTuner's own settings lead the argv through env(1), so command.txt and `loraforge render` print a
        # command that runs as it is; the rest of the environment is inherited.
        settings = {
            "CONFIG_BACKEND": "json",
            "CONFIG_PATH": str(rendered.files["config"]),
            "SIMPLETUNER_DISABLE_COLORS": "1",
            "PYTHONUNBUFFERED": "1",
            "ACCELERATE_CONFIG_FILE": os.devnull,  # a user's own accelerate default never changes a run
        }
        if self._channel is not None:
            settings["SIMPLETUNER_JOB_ID"] = self._channel.job_id
            # requests honours HTTP(S)_PROXY: loopback webhooks must never be sent through a user's proxy
            no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
            settings["NO_PROXY"] = ",".join(filter(None, [no_proxy, "127.0.0.1", "localhost"]))
        if target_device() == "cpu" and "CUDA_VISIBLE_DEVICES" not in os.environ:
            settings["CUDA_VISIBLE_DEVICES"] = ""
        accelerate = rendered.files.get("accelerate")
        if accelerate is not None and target_device() == "cpu":
            # torchrun does not pass the config's use_cpu on; Accelerator reads this and joins a gloo group
            settings["ACCELERATE_USE_CPU"] = "true"
        child_env = {**os.environ, **settings}
        python = str(env.python)
        if accelerate is not None:
            trainer = [python, "-m", "accelerate.commands.launch", "--config_file", str(accelerate)]
            trainer += ["-m", "simpletuner.train"]
        else:
            trainer = [python, "-m", "simpletuner.train"]
        argv = ["env", *(f"{key}={value}" for key, value in settings.items()), *trainer]
        cwd = rendered.files["config"].parent  # SimpleTuner writes debug.log into its working directory
        return Launch(argv=argv, env=child_env, cwd=cwd)

    def parser(self) -> SimpleTunerLogParser:
        channel = self._channel
        return SimpleTunerLogParser(webhooks_live=channel.live if channel else None)

    def watched(self, job: JobSpec, workdir: Path) -> list[Watched]:
        out = output_dir(workdir)
        return [
            MetricsFile(out / "training_metrics.jsonl", "loss/val/"),  # report_to=simpletuner, one key per eval set
            SampleFolder(out / "validation_images", re.compile(r"^step_(?P<step>\d+)_")),
        ]

    def collect(self, job: JobSpec, workdir: Path) -> Artifacts:
        out = output_dir(workdir)
        lora = out / LORA_FILE
        checkpoints = []
        if out.is_dir():
            for folder in out.glob("checkpoint-*"):
                match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
                if match and folder.is_dir():
                    checkpoints.append((int(match.group(1)), folder))
        checkpoints.sort()
        complete = [(step, folder) for step, folder in checkpoints if checkpoint_complete(folder)]
        resume = Resume(state=complete[-1][1], step=saved_step(*complete[-1])) if complete else None
        return Artifacts(lora=lora if lora.exists() else None, checkpoints=checkpoints, resume=resume)

    # the side channel -----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def open_channel(self, emit: Callable[[Event], None]) -> Iterator[None]:
        """Receive SimpleTuner's raw webhooks for the duration of a run and turn them into events."""
        from orchestrator.webhook import WebhookReceiver

        translator = WebhookTranslator()
        live = threading.Event()

        def on_payload(payload: dict[str, Any]) -> None:
            live.set()
            for event in translator.events(payload):
                emit(event)

        raw_port = os.environ.get("LORAFORGE_WEBHOOK_PORT") or "0"  # 0: the OS picks a free one
        if not raw_port.isdigit() or int(raw_port) > 65535:
            raise LoraforgeError(
                f"LORAFORGE_WEBHOOK_PORT={raw_port!r} is not a port number", "set 1-65535, or unset it (any free port)"
            )
        port = int(raw_port)
        receiver = WebhookReceiver(on_payload, port=port)
        try:
            receiver.start()
        except LoraforgeError as exc:  # the run still works: progress then comes from SimpleTuner's progress bar
            emit(Log("warning", f"{exc.message}; reading progress from SimpleTuner's log instead"))
            yield
            return
        self._channel = _Channel(url=receiver.url, job_id=receiver.job_id, live=live)
        try:
            yield
        finally:
            self._channel = None
            receiver.stop()

    # environment ----------------------------------------------------------------------------------------------

    def check(self, env: BackendEnv) -> list[Problem]:
        setup = "loraforge setup simpletuner"
        if not env.python.exists():
            return [Problem(f"interpreter {env.python} does not exist", f"{setup} --force")]
        version = python_version(env.python)
        if version is None:
            return [Problem(f"interpreter {env.python} does not run", f"{setup} --force")]
        if version[:2] < PYTHON_MIN or version[:2] >= PYTHON_MAX:
            shown = ".".join(map(str, version))
            return [
                Problem(
                    f"{env.python} is Python {shown}; SimpleTuner {VERSION} needs Python >= 3.12, < 3.15",
                    f"{setup} --force --python /path/to/python3.12",
                )
            ]
        installed = package_versions(env.python, ["simpletuner", "transformers", "torch"])
        pip = f"{env.python} -m pip install"
        problems = []
        if installed.get("simpletuner") is None:
            problems.append(Problem("simpletuner is not installed in this environment", f"{setup} --force"))
        elif installed["simpletuner"] != VERSION:
            problems.append(
                Problem(
                    f"simpletuner {installed['simpletuner']} is installed; loraforge is verified with {VERSION}",
                    f'{pip} "simpletuner[cpu]=={VERSION}" transformers=={PINS["transformers"]}',
                )
            )
        transformers = installed.get("transformers")
        if transformers is not None and transformers != PINS["transformers"]:
            problems.append(
                Problem(
                    f"transformers {transformers} is installed; SimpleTuner {VERSION} needs {PINS['transformers']} "
                    "(5.23 and later break every run)",
                    f"{pip} transformers=={PINS['transformers']}",
                )
            )
        return problems

    def setup(
        self, *, python: str | None, venv: Path | None, root: Path | None, force: bool, console: Any
    ) -> BackendEnv:
        from orchestrator.commands.setup_progress import run_pip

        if venv is not None:
            exe = venv_python(venv)
            if not exe.exists():
                raise BackendNotReady(f"--venv {venv}: no interpreter at {exe}", "pass the folder of a virtual env")
            return describe_env(exe, managed=False)
        target = home() / "envs" / "simpletuner"
        exe = venv_python(target)
        if exe.exists() and not force:
            env = describe_env(exe, managed=True)
            if not self.check(env):
                console.print(f"simpletuner environment already at {target} (use --force to recreate)")
                return env
        try:  # prefer the verified 3.12; any supported version otherwise
            interpreter, version = find_python(PYTHON_MIN, (3, 13), python)
        except BackendNotReady:
            interpreter, version = find_python(PYTHON_MIN, PYTHON_MAX, python)
        cuda = _nvidia_smi_works()
        extra = "cuda" if cuda else "cpu"
        console.print(
            f"creating {target} with Python {'.'.join(map(str, version))} ({interpreter}); installing "
            f"simpletuner[{extra}]=={VERSION}: about {VENV_SIZE_GB:.0f} GB of disk, several minutes"
        )
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        free_gb = shutil.disk_usage(target.parent).free / 1e9
        if free_gb < VENV_SIZE_GB + 1:
            raise BackendNotReady(
                f"{target.parent} has {free_gb:.1f} GB free; the SimpleTuner environment needs about "
                f"{VENV_SIZE_GB:.0f} GB",
                "free some disk space, or set LORAFORGE_HOME to a folder on a larger disk",
            )
        subprocess.run([str(interpreter), "-m", "venv", str(target)], check=True, capture_output=True)
        constraints = target / "loraforge-constraints.txt"
        constraints.write_text("".join(f"{k}=={v}\n" for k, v in PINS.items()), encoding="utf-8")
        run_pip(
            [str(exe), "-m", "pip", "install", f"simpletuner[{extra}]=={VERSION}", "-c", str(constraints)],
            console=console,
            label=f"simpletuner {VERSION}",
        )
        return describe_env(exe, managed=True)


def checkpoint_complete(folder: Path) -> bool:
    """SimpleTuner writes training_state.json first and, last, a .guard file saying "complete": a folder from a run
    stopped while saving has the one without the other (and no weights) and must not be resumed from."""
    guard = folder / ".guard"
    if guard.exists():
        return guard.read_text(encoding="utf-8", errors="replace").strip() == "complete"
    # no guard at all (a SimpleTuner that does not write one): the state and the weights must both be there
    return (folder / "training_state.json").exists() and any(folder.glob("pytorch_lora_weights.*"))


def saved_step(step: int, folder: Path) -> int:
    """The global step recorded in the checkpoint (the folder name says the same unless renamed)."""
    try:
        return int(json.loads((folder / "training_state.json").read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return step


class _Channel:
    def __init__(self, *, url: str, job_id: str, live: threading.Event) -> None:
        self.url = url
        self.job_id = job_id
        self.live = live


def render_accelerate(job: JobSpec, workdir: Path, mixed_precision: str) -> tuple[Path, list[str]]:
    """An explicit accelerate config for DDP on one node, and notes for the run (progress is read from rank 0:
    only it draws the bar and posts webhooks). Without CUDA the processes train on CPU and talk over gloo."""
    import yaml

    if job.distributed.nodes > 1:
        raise LoraforgeError(
            f"distributed.nodes={job.distributed.nodes}: multi-node SimpleTuner jobs are not supported yet",
            "train on one node (--nodes 1) with several GPUs (--gpus N)",
        )
    cpu = target_device() == "cpu"
    notes: list[str] = []
    if cpu:
        notes.append(
            f"distributed.gpus={job.distributed.gpus}: SimpleTuner's environment has no CUDA, so "
            f"{job.distributed.gpus} CPU processes (gloo) share this machine's {os.cpu_count()} cores"
        )
    values = {  # the shared accelerate template (one for every backend)
        # MULTI_GPU selects accelerate's torchrun launcher, which starts N processes; with use_cpu (and
        # ACCELERATE_USE_CPU in the child, see command) each joins a gloo group on CPU. A MULTI_CPU config would
        # start a single process unless run under mpirun.
        "distributed_type": "MULTI_GPU",
        "processes": job.distributed.gpus,
        "machines": 1,
        "machine_rank": 0,
        "main_ip": "127.0.0.1",
        "port": free_port(),
        "mixed_precision": "no" if cpu else mixed_precision,
        "use_cpu": cpu,
    }
    path = write_rendered(workdir / "accelerate.yaml", render_template("accelerate.yaml.j2", **values))
    parsed = yaml.safe_load(path.read_text(encoding="utf-8"))
    if any(parsed[key] != values[value] for key, value in _ACCELERATE_KEYS.items()):
        raise LoraforgeError(f"rendered {path} does not match the intended values", "report this bug")
    return path, notes


_ACCELERATE_KEYS = {  # accelerate config key -> template value, read back after rendering
    "distributed_type": "distributed_type",
    "num_processes": "processes",
    "main_process_port": "port",
    "mixed_precision": "mixed_precision",
    "use_cpu": "use_cpu",
}


def refuse_family(family: str | None) -> None:
    if family == "sd15":
        raise LoraforgeError(
            f"SimpleTuner {VERSION} cannot train SD 1.5 models (its SD 1.x pipeline fails to load)",
            "train SD 1.5 with sd-scripts: --backend kohya",
        )
    if family not in SimpleTunerBackend.families:
        raise LoraforgeError(f"SimpleTuner cannot train family {family!r}", "SimpleTuner trains: sdxl, flux")


def describe_env(python: Path, *, managed: bool) -> BackendEnv:
    """A BackendEnv with versions and whether its torch sees CUDA (probed once here; render reads it back)."""
    versions = {k: v for k, v in package_versions(python, ["simpletuner", "torch", "transformers"]).items() if v}
    found = python_version(python)
    if found:
        versions["python"] = ".".join(map(str, found))
    if "torch" in versions:
        probe = subprocess.run(
            [str(python), "-c", "import torch; print(torch.version.cuda if torch.cuda.is_available() else 'no')"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        versions["cuda"] = probe.stdout.strip().splitlines()[-1] if probe.returncode == 0 and probe.stdout else "no"
    return BackendEnv(backend="simpletuner", python=python, versions=versions, managed=managed)


# --- webhooks -> events -----------------------------------------------------------------------------------------

STAGE_PHASES = {
    "init_data_backend": "loading",
    "init_text_embed_cache": "caching",
    "init_vae_cache": "caching",
    "init_load_base_model": "loading",
    "init_prepare_models": "loading",
    "init_resume_checkpoint": "loading",
    "checkpoint_save": "saving",
    "model_save": "saving",
}


class WebhookTranslator:
    """SimpleTuner raw webhook payloads -> events: training.status -> Progress, training.checkpoint -> Checkpoint,
    lifecycle.stage -> Phase, error log messages -> Log. Repeated readings of the same step are dropped."""

    def __init__(self) -> None:
        self.phase: str | None = None
        self.last: tuple[int, float | None] | None = None

    def _phase(self, name: str) -> list[Event]:
        if name == self.phase:
            return []
        self.phase = name
        return [Phase(name)]

    def events(self, payload: dict[str, Any]) -> list[Event]:
        kind = payload.get("type")
        if kind == "training.status":
            return self._status(payload)
        if kind == "training.checkpoint":
            path = str((payload.get("checkpoint") or {}).get("path") or "")
            if not path:
                return []
            match = re.search(r"checkpoint-(\d+)", path)
            return [Checkpoint(path, int(match.group(1)) if match else None)]
        if kind == "lifecycle.stage":
            stage = payload.get("stage") or {}
            key, status = stage.get("key"), stage.get("status")
            if key == "training_complete" and status == "completed":
                return self._phase("done")
            if status == "running" and key in STAGE_PHASES:
                return self._phase(STAGE_PHASES[key])
            return []
        if kind == "log.message" and payload.get("severity") in ("error", "critical"):
            return [Log("error", str(payload.get("message", "")))]
        return []

    def _status(self, payload: dict[str, Any]) -> list[Event]:
        progress = payload.get("progress") or {}
        data = payload.get("data") or {}
        step = progress.get("current", data.get("global_step"))
        if step is None:
            return []
        metrics = progress.get("metrics") or {}
        starting = "eta_seconds" not in progress  # the "training initialisation" reading: no step has run yet
        loss = None if starting else metrics.get("loss")
        if self.last == (int(step), loss):
            return []
        self.last = (int(step), loss)
        seconds = metrics.get("seconds_per_step")
        event = Progress(
            step=int(step),
            total=progress.get("total", data.get("total_num_steps")),
            epoch=data.get("current_epoch", metrics.get("epoch")),
            epochs=data.get("total_num_epochs", data.get("final_epoch", metrics.get("total_epochs"))),
            loss=loss,
            lr=None if starting else metrics.get("learning_rate"),
            it_per_s=1.0 / seconds if seconds else None,
            eta_s=progress.get("eta_seconds"),
        )
        return [*self._phase("training"), event]


# --- the stderr / stdout parser ---------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]")
_BAR = re.compile(
    r"(?:Epoch (?P<epoch>\d+)/(?P<epochs>\d+),? )?Steps:\s*\d+%\|[^|]*\|\s*(?P<step>\d+)/(?P<total>\d+) "
    r"\[(?P<inside>[^\]]*)\]"
)
_RATE = re.compile(r"(?P<value>[\d.]+)(?P<unit>s/it|it/s)")
_ELAPSED = re.compile(r"^\s*[\d:]+<(?P<remaining>[\d:]+)")
# A checkpoint is complete when its LoRA weights (via accelerate launch) or its random states, the last piece of
# training state SimpleTuner writes (via python -m simpletuner.train), are saved.
_SAVED = re.compile(r"(?:Model weights|Random states) saved in (?P<path>\S+)")
_SAVING = re.compile(r"Saving current state to \S*checkpoint-\d+")
_CACHING = ("Generating aspect bucket cache", "Processing prompts", "Loading captions", "Caching")
_EXCEPTION = re.compile(r"^(?P<name>[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)|Killed)\b:?\s*(?P<text>.*)$")


def _seconds(clock: str) -> float:
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total


class SimpleTunerLogParser:
    """Bytes from SimpleTuner's stdout/stderr -> events. Handles ``\\r`` tqdm redraws, ``\\x1b[A`` cursor moves and
    colours, and tracebacks. tqdm draws each step first with the previous step's ``step_loss`` and then again with
    its own, so the first drawing of a new step carries no loss. When ``webhooks_live`` is set, the webhooks own
    progress, checkpoints and phases, and this parser only watches for failures."""

    def __init__(self, webhooks_live: threading.Event | None = None) -> None:
        self.webhooks_live = webhooks_live
        self._buffers: dict[str, str] = {"stdout": "", "stderr": ""}
        self._decoders: dict[str, Any] = {}
        self.tail: deque[str] = deque(maxlen=40)
        self.phase: str | None = None
        self.step: int | None = None
        self.loss_fresh = False
        self.last: tuple[int, float | None] | None = None
        self.exceptions: list[tuple[str, str]] = []
        self.saved_checkpoints: set[str] = set()
        self._translator: WebhookTranslator | None = None
        self.ranks = RankWatch()  # several processes: which rank failed first

    def feed(self, data: bytes, stream: str) -> list[Event]:
        import codecs

        decoder = self._decoders.setdefault(stream, codecs.getincrementaldecoder("utf-8")("replace"))
        text = self._buffers.get(stream, "") + decoder.decode(data)
        segments = re.split(r"[\r\n]", text)
        self._buffers[stream] = segments.pop()
        events: list[Event] = []
        for segment in segments:
            events.extend(self._segment(segment))
        return events

    def finish(self, returncode: int) -> list[Event]:
        events: list[Event] = []
        for stream, rest in self._buffers.items():
            if rest:
                events.extend(self._segment(rest))
            self._buffers[stream] = ""
        if returncode != 0:
            events.append(self.failure(returncode))
        return events

    @property
    def _quiet(self) -> bool:
        return self.webhooks_live is not None and self.webhooks_live.is_set()

    def _set_phase(self, name: str) -> list[Event]:
        if name == self.phase or self._quiet:
            return []
        self.phase = name
        return [Phase(name)]

    def _segment(self, raw: str) -> list[Event]:
        rank, line = split_rank(_ANSI.sub("", raw).rstrip())
        self.ranks.see(rank, line)
        if rank:  # another rank's line (torch prefixes its tracebacks): its errors count, never its output
            self.tail.append(f"[rank{rank}]: {line}"[:400])
            return []
        if not line.strip():
            return []
        if line.startswith("{"):
            structured = self._json_line(line)
            if structured is not None:
                return structured
        events: list[Event] = []
        bar = _BAR.search(line)
        if bar is not None:
            events.extend(self._bar(bar))
        else:
            self.tail.append(line[:400])
            self._watch_exception(line)
            if line.startswith(_CACHING) and self.step is None:  # caption reloads at checkpoints are not a phase
                events.extend(self._set_phase("caching"))
            elif _SAVING.search(line):
                events.extend(self._set_phase("saving"))
            elif "[ERROR]" in line:
                events.append(Log("error", line.split("[ERROR]", 1)[1].strip()))
        saved = _SAVED.search(line)
        if saved is not None:
            events.extend(self._saved(saved.group("path")))
        return events

    def _json_line(self, line: str) -> list[Event] | None:
        """Saved structured output read like a log: a webhook capture line ({"body": payload}), a raw webhook
        payload, or a training_metrics.jsonl line (report_to=simpletuner). None when the line is not one."""
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        if isinstance(record.get("body"), str):
            try:
                record = json.loads(record["body"])
            except ValueError:
                return None
        if "type" in record and "job_id" in record:
            if self._translator is None:
                self._translator = WebhookTranslator()
            return [] if self._quiet else self._translator.events(record)
        metrics = record.get("metrics")
        if isinstance(metrics, dict) and "step" in record:
            if "train_loss" not in metrics or self._quiet:
                return []  # system metrics (cpu, memory) share the file
            epoch = metrics.get("epoch")
            return [
                Progress(
                    step=int(record["step"]),
                    epoch=int(epoch) if epoch is not None else None,
                    loss=metrics["train_loss"],
                    lr=metrics.get("learning_rate"),
                    it_per_s=1.0 / metrics["seconds_per_step"] if metrics.get("seconds_per_step") else None,
                )
            ]
        return None

    def _bar(self, match: re.Match[str]) -> list[Event]:
        step, total = int(match.group("step")), int(match.group("total"))
        inside = match.group("inside")
        fields = dict(part.strip().split("=", 1) for part in inside.split(",") if "=" in part)
        if step != self.step:  # a new count is drawn first with the previous step's postfix
            self.step, self.loss_fresh, loss = step, False, None
        else:
            loss = float(fields["step_loss"]) if "step_loss" in fields else None
            if loss is None or (self.loss_fresh and self.last == (step, loss)):
                return []  # a redraw (elapsed time changed) or no reading yet
            self.loss_fresh = True
        self.last = (step, loss)
        rate = _RATE.search(inside)
        it_per_s = None
        if rate is not None:
            value = float(rate.group("value"))
            it_per_s = value if rate.group("unit") == "it/s" else (1.0 / value if value else None)
        remaining = _ELAPSED.search(inside)
        events = self._set_phase("training")
        if self._quiet:
            return []
        events.append(
            Progress(
                step=step,
                total=total,
                epoch=int(match.group("epoch")) if match.group("epoch") else None,
                epochs=int(match.group("epochs")) if match.group("epochs") else None,
                loss=loss,
                lr=float(fields["lr"]) if "lr" in fields and loss is not None else None,
                it_per_s=it_per_s,
                eta_s=_seconds(remaining.group("remaining")) if remaining else None,
            )
        )
        return events

    def _saved(self, path: str) -> list[Event]:
        folder = Path(path).parent
        match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
        if match is None:
            return self._set_phase("saving")
        if str(folder) in self.saved_checkpoints or self._quiet:
            return []
        self.saved_checkpoints.add(str(folder))
        return [Checkpoint(str(folder), int(match.group(1)))]

    def _watch_exception(self, line: str) -> None:
        match = _EXCEPTION.match(line.strip())
        if match is not None and not line.startswith((" ", "\t")):
            self.exceptions.append((match.group("name"), match.group("text").strip()))

    def failure(self, returncode: int) -> Failure:
        return with_rank(self._failure(returncode), self.ranks.failure(), "SimpleTuner")

    def _failure(self, returncode: int) -> Failure:
        tail = list(self.tail)[-25:]
        roots = [e for e in self.exceptions if not e[0].endswith("CalledProcessError")]
        name, text = (roots or self.exceptions or [("", "")])[0]
        joined = "\n".join(self.tail)
        if returncode in (137, -9) and not roots:
            return Failure(
                "killed",
                "SimpleTuner was killed (SIGKILL) before it finished",
                "often the system ran out of RAM; close other programs or lower resolution/batch size, then "
                "`loraforge resume RUN` continues from the last checkpoint",
                tail,
            )
        if returncode in (130, 143) or name == "KeyboardInterrupt":
            return Failure("interrupted", "SimpleTuner was stopped", "`loraforge resume RUN` continues it", tail)
        missing = re.search(r"it looks like (\S+) is not the path to a directory", joined)
        if missing or "does not appear to have a file named" in joined or "Repository Not Found" in joined:
            where = missing.group(1) if missing else "the base model"
            return Failure(
                "model_not_found",
                f"base model not found: {where} (SimpleTuner's message mentions the hub even for a local path)",
                "set base_model to an existing diffusers folder or a hub id available offline",
                tail,
            )
        if "out of memory" in joined.lower() or "OutOfMemoryError" in name or "can't allocate memory" in joined:
            return Failure(
                "out_of_memory",
                f"SimpleTuner ran out of memory: {text[:200]}",
                "lower training.batch_size or training.resolution, or enable training.gradient_checkpointing",
                tail,
            )
        if name in ("ModuleNotFoundError", "ImportError"):
            return Failure(
                "not_installed",
                f"SimpleTuner could not import a module: {text[:200]}",
                "repair the environment: `loraforge setup simpletuner --force`",
                tail,
            )
        if "unrecognized arguments" in joined or "invalid choice" in joined:
            return Failure("bad_argument", f"SimpleTuner rejected an option: {text[:200]}", "check the job file", tail)
        message = f"SimpleTuner exited with code {returncode}" + (f": {name}: {text[:200]}" if name else "")
        return Failure("other", message, "see the log tail above and logs/stderr.log", tail)
