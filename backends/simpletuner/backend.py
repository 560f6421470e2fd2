"""The SimpleTuner backend: JobSpec -> config.json + multidatabackend.json, ``python -m simpletuner.train``.

Thin on purpose: option mapping lives in options.py, the environment in env.py, output and webhook parsing in
logs.py and webhooks.py. Nothing is kept on the object between calls: what ``render`` needs arrives as arguments
(the device and hub access on the BackendEnv, the webhook endpoint), and what later steps need goes back in
:class:`Rendered`.

Facts this relies on (SimpleTuner 4.10.1, verified on CPU):
- the aspect bucket cache is written into the image folder itself, so each run trains from its own copy of the
  dataset (``run.data``): a stale cache from another run can never meet a changed config;
- ``CONFIG_BACKEND=json CONFIG_PATH=...`` is honoured and key=value CLI overrides are not;
- ``resume_from_checkpoint`` takes a checkpoint folder name inside ``output_dir``;
- a webhook entry's ``auth_token`` is sent as the ``X-API-Key`` header, which loraforge's receiver requires.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from backends.base import Artifacts, Endpoint, Launch, Problem, Rendered, Resume, SetupRequest, Warm
from backends.simpletuner import env as environment
from backends.simpletuner.logs import SimpleTunerLogParser
from backends.simpletuner.options import map_options, reject_unknown_options, split_dataset
from backends.simpletuner.warm import warm as warm_spec
from orchestrator.dataset.model import Dataset, DatasetImage, run_copy_name, write_run_copy
from orchestrator.distributed import free_port
from orchestrator.envs import BackendEnv
from orchestrator.errors import LoraforgeError
from orchestrator.job import JobSpec
from orchestrator.render import render_template, write_rendered
from orchestrator.reuse import Reuse, files_signature, key
from orchestrator.runs import RunDir
from orchestrator.userpath import user_path
from orchestrator.watch import MetricsFile, SampleFolder

LORA_FILE = "pytorch_lora_weights.safetensors"
LORA_WITH_CONFIG = "pytorch_lora_weights.loraforge.safetensors"  # the final LoRA with its PEFT config put back
ADAPTER_KEY = "lora_adapter_metadata"  # diffusers' metadata key for PEFT's LoraConfig (r, lora_alpha, targets)
SD15_REASON = (
    f"SimpleTuner {environment.VERSION}'s SD 1.x pipeline fails to load (StableDiffusionPipeline is built without "
    "its safety_checker and feature_extractor)"
)


def output_dir(run: RunDir) -> Path:
    return run.output / "simpletuner"


class SimpleTunerBackend:
    name = "simpletuner"
    label = "SimpleTuner"
    # each trained for real on CPU on its tiny model (tests/fixtures/simpletuner, tests/integration)
    families = frozenset({"sdxl", "flux", "sd3", "chroma", "lumina2", "qwen_image", "flux2"})
    refused = {"sd15": SD15_REASON}
    webhooks = True

    def setup(self, request: SetupRequest, console: Any) -> BackendEnv:
        return environment.setup(request, console)

    def check(self, env: BackendEnv) -> list[Problem]:
        return environment.check(env)

    def render(
        self,
        job: JobSpec,
        dataset: Dataset,
        run: RunDir,
        env: BackendEnv,
        *,
        resume: Resume | None = None,
        endpoint: Endpoint | None = None,
    ) -> Rendered:
        if job.family not in self.families:
            why = self.refused.get(job.family or "", f"SimpleTuner trains {', '.join(sorted(self.families))}")
            raise LoraforgeError(f"SimpleTuner cannot train {job.family} models: {why}", "use --backend kohya")
        trained, held = split_dataset(dataset, job)
        write_run_copy(trained, run.data, dataset.root)
        held_folder = run.path / "eval"
        if held:
            write_run_copy(held, held_folder, dataset.root)
        out = output_dir(run)
        folder = run.rendered
        options = map_options(
            job,
            cpu=env.cpu,
            offline=env.offline,
            data=run.data,
            held_out=held_folder if held else None,
            cache=run.path / "cache",
            out=out,
            lycoris_file=folder / "lycoris.json",
        )
        config, notes = options.config, options.notes
        if env.python.is_absolute() and env.python.exists():
            reject_unknown_options(config, env.python)
        files: dict[str, Path] = {}
        files["multidatabackend"] = write_rendered(
            folder / "multidatabackend.json",
            render_template("simpletuner/multidatabackend.json.j2", datasets=options.datasets),
        )
        config["data_backend_config"] = str(files["multidatabackend"])
        if options.lycoris is not None:
            files["lycoris"] = write_rendered(
                folder / "lycoris.json", render_template("simpletuner/config.json.j2", config=options.lycoris)
            )
        if resume is not None:
            if resume.state.parent.resolve() != out.resolve():
                raise LoraforgeError(
                    f"checkpoint {resume.state} is not in this run's SimpleTuner output folder {out}",
                    "resume the run folder the checkpoint belongs to",
                )
            config["resume_from_checkpoint"] = resume.state.name
        hooks = _webhooks_file(folder / "webhooks.json", endpoint)
        if hooks is not None:
            files["webhooks"] = hooks
            config["webhook_config"] = str(hooks)
        files["config"] = write_rendered(
            folder / "config.json", render_template("simpletuner/config.json.j2", config=config)
        )
        if job.distributed.gpus * job.distributed.nodes > 1:
            files["accelerate"], ddp_notes = _accelerate(job, folder, config["mixed_precision"], cpu=env.cpu)
            notes.extend(ddp_notes)
        for label, expected in (
            ("config", config),
            ("multidatabackend", options.datasets),
            ("lycoris", options.lycoris),
        ):
            if label in files and _read_json(files[label]) != expected:
                raise LoraforgeError(f"rendered {files[label]} does not match the intended values", "report this bug")
        return Rendered(
            files=files,
            data=run.data,
            notes=notes,
            values=config,
            watched=[
                MetricsFile(out / "training_metrics.jsonl", "loss/val/"),  # report_to=simpletuner, one key per set
                SampleFolder(out / "validation_images", re.compile(r"^step_(?P<step>\d+)_")),
            ],
            endpoint=endpoint,
            reuse=_reuse(job, config, trained, run.path / "cache", env),
        )

    def command(self, job: JobSpec, rendered: Rendered, env: BackendEnv) -> Launch:
        """``python -m simpletuner.train`` (one process) or accelerate with the rendered config (several)."""
        settings = {
            "CONFIG_BACKEND": "json",
            "CONFIG_PATH": str(rendered.files["config"]),
            "SIMPLETUNER_DISABLE_COLORS": "1",
            "PYTHONUNBUFFERED": "1",
            "ACCELERATE_CONFIG_FILE": os.devnull,  # a user's own accelerate default never changes a run
        }
        if rendered.endpoint is not None:
            settings["SIMPLETUNER_JOB_ID"] = rendered.endpoint.job_id  # the receiver takes only this job's posts
        if env.cpu:
            settings["CUDA_VISIBLE_DEVICES"] = ""
        accelerate = rendered.files.get("accelerate")
        python = str(env.python)
        if accelerate is None:
            argv = [python, "-m", "simpletuner.train"]
        else:
            if env.cpu:  # torchrun does not pass the config's use_cpu on; Accelerator reads this and joins gloo
                settings["ACCELERATE_USE_CPU"] = "true"
            argv = [python, "-m", "accelerate.commands.launch", "--config_file", str(accelerate)]
            argv += ["-m", "simpletuner.train"]
        # SimpleTuner writes debug.log into its working directory
        return Launch(argv=argv, env=settings, cwd=rendered.files["config"].parent)

    def parser(self, rendered: Rendered | None = None) -> SimpleTunerLogParser:
        return SimpleTunerLogParser()

    def warm(self, env: BackendEnv) -> Warm:
        return warm_spec(env)

    def collect(self, job: JobSpec, run: RunDir) -> Artifacts:
        out = output_dir(run)
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
        final = with_adapter_config(lora, job, [folder for _, folder in complete]) if lora.exists() else None
        return Artifacts(lora=final, checkpoints=checkpoints, resume=resume)


def _webhooks_file(path: Path, endpoint: Endpoint | None) -> Path | None:
    """SimpleTuner's webhook config, readable by the owner only: it holds the run's secret (sent back to the
    receiver as X-API-Key). Without an endpoint any earlier one is removed: nothing listens there any more."""
    path.unlink(missing_ok=True)
    if endpoint is None:
        return None
    hook = {"webhook_type": "raw", "callback_url": endpoint.url, "log_level": "info", "auth_token": endpoint.secret}
    text = render_template("simpletuner/webhooks.json.j2", hooks=[hook])
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as file:
        file.write(text)
    if _read_json(path) != [hook]:
        raise LoraforgeError(f"rendered {path} does not match the intended values", "report this bug")
    return path


def _read_json(path: Path) -> Any:
    def refuse(name: str) -> Any:
        raise LoraforgeError(f"rendered {path} holds {name}, which is not JSON", "report this bug")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def _accelerate(job: JobSpec, folder: Path, mixed_precision: str, *, cpu: bool) -> tuple[Path, list[str]]:
    """An explicit accelerate config for DDP on one node, and notes for the run (progress is read from rank 0:
    only it draws the bar and posts webhooks). Without CUDA the processes train on CPU and talk over gloo."""
    import yaml

    gpus = job.distributed.gpus
    if job.distributed.nodes > 1:
        raise LoraforgeError(
            f"distributed.nodes={job.distributed.nodes}: multi-node SimpleTuner jobs are not supported yet",
            "train on one node (--nodes 1) with several GPUs (--gpus N)",
        )
    notes = []
    if cpu:
        notes.append(
            f"distributed.gpus={gpus}: SimpleTuner's environment has no CUDA, so {gpus} CPU processes (gloo) share "
            f"this machine's {os.cpu_count()} cores"
        )
    values = {
        # MULTI_GPU selects accelerate's torchrun launcher, which starts N processes; with use_cpu (and
        # ACCELERATE_USE_CPU in the child, see command) each joins a gloo group on CPU. A MULTI_CPU config would
        # start a single process unless run under mpirun.
        "distributed_type": "MULTI_GPU",
        "processes": gpus,
        "machines": 1,
        "machine_rank": 0,
        "main_ip": "127.0.0.1",
        "port": free_port(),
        "mixed_precision": "no" if cpu else mixed_precision,
        "use_cpu": cpu,
    }
    path = write_rendered(folder / "accelerate.yaml", render_template("accelerate.yaml.j2", **values))
    parsed = yaml.safe_load(path.read_text(encoding="utf-8"))
    read_back = {"distributed_type": "distributed_type", "num_processes": "processes", "main_process_port": "port",
                 "mixed_precision": "mixed_precision", "use_cpu": "use_cpu"}  # fmt: skip
    if any(parsed[key] != values[value] for key, value in read_back.items()):
        raise LoraforgeError(f"rendered {path} does not match the intended values", "report this bug")
    return path, notes


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


def with_adapter_config(lora: Path, job: JobSpec, checkpoints: list[Path]) -> Path:
    """The final LoRA with PEFT's config (rank and alpha) in its metadata. SimpleTuner 4.10.1 saves the final file
    with ``{"format": "pt"}`` only, while its checkpoints' copies carry the config: without it diffusers loads the
    LoRA at alpha = rank and a conversion to Kohya's layout writes alpha = rank, whatever network.alpha trained.
    The config comes from the newest complete checkpoint's copy, else from the job; the trainer's own file is left
    as it is and the completed one written beside it (once)."""
    from orchestrator.lora.safetensors_io import read, read_header, write

    try:
        header, metadata, _ = read_header(lora)
    except LoraforgeError:  # a broken file: finalize refuses it, with the reason
        return lora
    modules = sorted({key.rsplit(".lora_A.", 1)[0] for key in header if ".lora_A." in key})
    if ADAPTER_KEY in metadata or not modules:  # already whole, or not PEFT's LoRA (LyCORIS has its own)
        return lora
    target = lora.with_name(LORA_WITH_CONFIG)
    if target.exists() and target.stat().st_mtime_ns >= lora.stat().st_mtime_ns:
        return target
    saved = [_metadata(folder / LORA_FILE).get(ADAPTER_KEY) for folder in reversed(checkpoints)]
    config = next((text for text in saved if text), None)
    if config is None:
        roots: dict[str, list[str]] = {}
        for module in modules:
            root, _, path = module.partition(".")
            roots.setdefault(root, []).append(path)
        peft: dict[str, Any] = {}
        for root, paths in roots.items():  # as diffusers writes it: PEFT's LoraConfig fields under the component
            peft |= {f"{root}.r": job.network.rank, f"{root}.lora_alpha": job.alpha, f"{root}.peft_type": "LORA"}
            peft[f"{root}.target_modules"] = paths  # full module paths: PEFT matches them exactly
        config = json.dumps(peft, indent=2, sort_keys=True)
    tensors, _ = read(lora)
    return write(target, tensors, {**metadata, ADAPTER_KEY: config})


def _metadata(path: Path) -> dict[str, str]:
    from orchestrator.lora.safetensors_io import read_header

    try:
        return read_header(path)[1]
    except (LoraforgeError, OSError):
        return {}


def _reuse(
    job: JobSpec, config: dict[str, Any], trained: list[DatasetImage], cache: Path, env: BackendEnv
) -> list[Reuse]:
    """SimpleTuner's caches a later run may reuse. Text embeddings: its file names hash the caption, so they depend
    on the model, its text encoders' settings and SimpleTuner's version. Latents: their file names are the images'
    names, so they depend on the images themselves (names, sizes, times) and the resolution settings too; on CPU
    they are made on demand and never written."""
    local = user_path(job.base_model)
    model = files_signature(local) if local.exists() else job.base_model  # a hub id names a snapshot
    common = (env.versions.get("simpletuner"), job.family, config.get("model_flavour"), model)
    reuse = [Reuse(cache / "text", key("simpletuner text", *common, config.get("tokenizer_max_length")), "text embeddings")]
    if not env.cpu:
        images = [(run_copy_name(i), *files_signature(i.path)[0][1:]) for i in trained]
        settings = (job.training.resolution, job.training.repeats, config.get("vae_cache_scan_behaviour"))
        reuse.append(Reuse(cache / "vae", key("simpletuner latents", *common, settings, images), "latents"))
    return reuse

