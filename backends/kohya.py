"""kohya-ss sd-scripts: templates, argv, log patterns and environment, top to bottom.

sd-scripts runs as ``python -m accelerate.commands.launch --config_file accelerate.yaml SCRIPT --config_file
config.toml`` with the sd-scripts checkout as working directory, in its own venv. Its output:
- stdout: print() lines: the summary block ("total optimization steps / ...: N"), "epoch k/K", "saving checkpoint:
  PATH", "skipping N steps" on resume;
- stderr: rich logging (wrapped at 80 columns) and the tqdm bar "steps: 25%|..| 1/4 [.., 6.44s/it, avr_loss=1.09]",
  separated by \\r, each step drawn twice (timing first, then with avr_loss, a moving average);
- failures: a Python traceback, then accelerate's CalledProcessError traceback; exit status 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections import deque
from functools import cache
from pathlib import Path
from typing import Any

from backends.base import Artifacts, Launch, Problem, Rendered, Resume
from orchestrator.distributed import RankWatch, free_port, node_placement, split_rank, with_rank
from orchestrator.envs import BackendEnv, find_python, home, package_versions, python_version, venv_python
from orchestrator.errors import BackendNotReady, LoraforgeError
from orchestrator.events import Checkpoint, Event, Failure, Log, Phase, Progress, Validation
from orchestrator.job import JobSpec
from orchestrator.render import render_template, write_rendered
from orchestrator.steps import validation_interval
from orchestrator.watch import SampleFolder, Watched

SCRIPTS = {"sd15": "train_network.py", "sdxl": "sdxl_train_network.py", "flux": "flux_train_network.py"}
TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]
OPTIMIZERS = {
    "adamw": "AdamW",
    "adamw8bit": "AdamW8bit",
    "adafactor": "Adafactor",
    "prodigy": "Prodigy",
    "lion": "Lion",
    "sgd": "SGDNesterov",
    "dadaptadam": "DAdaptAdam",
}
# sd-scripts reads the CLIP tokenizers from <tokenizer_cache_dir>/<hub id with / as _> when that folder exists.
TOKENIZER_FOLDERS = {
    "tokenizer": "openai_clip-vit-large-patch14",
    "tokenizer_2": "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k",
}


def default_root() -> Path:
    """The sd-scripts checkout beside the package: <repo>/third_party/sd-scripts."""
    return Path(__file__).resolve().parent.parent / "third_party" / "sd-scripts"


def missing_sd_scripts(root: Path) -> tuple[str, str]:
    """The message and fix when there is no sd-scripts checkout: the submodule folder of a plain clone is empty."""
    if root == default_root():
        return (
            f"sd-scripts not found: {root} is empty (a git submodule, not fetched by a plain `git clone`)",
            "git submodule update --init (or clone with `git clone --recursive`), or pass --sd-scripts DIR "
            "(a kohya-ss/sd-scripts checkout)",
        )
    return f"sd-scripts not found at {root} (no train_network.py)", "pass --sd-scripts DIR (a kohya-ss/sd-scripts checkout)"


def uses_cuda(env: BackendEnv) -> bool:
    return env.versions.get("cuda", "no") not in ("no", "", None)


def _layout(workdir: Path) -> Path:
    """sd-scripts writes its LoRA, checkpoints and states here (beside the rendered files, inside the run)."""
    return workdir.parent / "output" / "kohya"


def network_settings(job: JobSpec) -> tuple[str, list[str]]:
    """network_module and network_args for the job's network type."""
    args = [f"{k}={v}" for k, v in job.network.args.items()]
    kind = job.network.type
    if kind == "lora":
        return ("networks.lora_flux" if job.family == "flux" else "networks.lora"), args
    if kind == "dylora":
        return "networks.dylora", args
    return "lycoris.kohya", [f"algo={kind}", *args]


def build_options(job: JobSpec, workdir: Path, *, cpu: bool, resume: Resume | None) -> tuple[dict[str, Any], list[str]]:
    """sd-scripts options for the job, in a readable order, and notes on what it cannot express."""
    training = job.training
    notes: list[str] = []
    module, network_args = network_settings(job)
    options: dict[str, Any] = {
        "pretrained_model_name_or_path": job.base_model,
        "dataset_config": str(workdir / "dataset.toml"),
        "output_dir": str(_layout(workdir)),
        "output_name": job.lora_name,
        "save_model_as": "safetensors",
        "caption_extension": ".txt",
        "network_module": module,
        "network_dim": job.network.rank,
        "network_alpha": job.alpha,
    }
    if network_args:
        options["network_args"] = network_args
    if job.network.dropout:
        options["network_dropout"] = job.network.dropout
    options["learning_rate"] = training.learning_rate
    options["unet_lr"] = training.learning_rate
    if training.text_encoder_lr:
        options["text_encoder_lr"] = training.text_encoder_lr
    else:
        options["network_train_unet_only"] = True
    options["max_train_steps"] = training.steps  # always explicit: never sd-scripts' hidden 1600-step default
    options["gradient_accumulation_steps"] = training.gradient_accumulation
    options["optimizer_type"] = OPTIMIZERS[training.optimizer]
    options["lr_scheduler"] = training.scheduler
    if training.warmup_steps:
        options["lr_warmup_steps"] = training.warmup_steps
    options["seed"] = training.seed
    precision = "no" if cpu or training.precision == "fp32" else training.precision
    if cpu and training.precision != "fp32":
        notes.append(f"training.precision={training.precision}: trained in fp32 (no mixed precision on CPU)")
    options["mixed_precision"] = precision
    options["save_precision"] = "float" if precision == "no" else precision
    if training.gradient_checkpointing:
        options["gradient_checkpointing"] = True
    if training.cache_latents:
        options["cache_latents"] = True
    if training.noise_offset:
        options["noise_offset"] = training.noise_offset
    if training.min_snr_gamma:
        options["min_snr_gamma"] = training.min_snr_gamma
    options["max_data_loader_n_workers"] = 0 if cpu else 2
    if not cpu:
        options["sdpa"] = True
    if job.saving.every_n_steps:
        options["save_every_n_steps"] = job.saving.every_n_steps
        options["save_state"] = True  # what `loraforge resume` continues from
        if job.saving.keep_last:
            options["save_last_n_steps"] = job.saving.every_n_steps * job.saving.keep_last
            options["save_last_n_steps_state"] = job.saving.every_n_steps * job.saving.keep_last
    if job.sampling.every_n_steps and job.sampling.prompts:
        options["sample_every_n_steps"] = job.sampling.every_n_steps
        options["sample_prompts"] = str(workdir / "prompts.txt")
        options["sample_sampler"] = "euler_a"
    if job.distributed.ddp_timeout_minutes:
        options["ddp_timeout"] = job.distributed.ddp_timeout_minutes
    if training.validation_split:
        options["validate_every_n_steps"] = validation_interval(job)
    tokenizers = local_tokenizers(job.base_model, workdir)
    if tokenizers is not None:
        options["tokenizer_cache_dir"] = str(tokenizers)
    if resume is not None:
        options["resume"] = str(resume.state)
        options["skip_until_initial_step"] = True  # --resume alone would start counting at step 0 again
    options.update(job.backend_args.get("kohya", {}))
    for other in sorted(set(job.backend_args) - {"kohya"}):
        notes.append(f"backend_args.{other}: not used by the kohya backend")
    return options, notes


def local_tokenizers(base_model: str, workdir: Path) -> Path | None:
    """A local diffusers folder's own tokenizers, laid out where sd-scripts looks, so nothing is downloaded."""
    try:
        model = Path(base_model).expanduser()
    except RuntimeError:  # "~user" of an unknown user: not a local folder
        return None
    if not (model / "tokenizer").is_dir():
        return None
    cache_root = workdir / "tokenizers"
    for sub, folder in TOKENIZER_FOLDERS.items():
        if (model / sub).is_dir() and not (cache_root / folder).exists():
            shutil.copytree(model / sub, cache_root / folder)
    return cache_root


@cache
def known_options(root: str) -> frozenset[str] | None:
    """sd-scripts' own option names, dumped once per checkout commit by `loraforge setup kohya`."""
    dump = _options_dump(Path(root))
    if dump.exists():
        return frozenset(json.loads(dump.read_text(encoding="utf-8")))
    from orchestrator.presets.kohya_import import sd_scripts_options

    return frozenset(sd_scripts_options())  # the option list shipped with loraforge (sd-scripts 48d368fa)


def sd_scripts_commit(root: Path) -> str | None:
    """The sd-scripts commit of a checkout. A folder without its own .git (the submodule filled by copying, as CI
    does) is the commit the repository pins; never the enclosing repository's own HEAD."""
    if (root / ".git").exists():
        argv, parse = ["git", "-C", str(root), "rev-parse", "HEAD"], str.strip
    elif root == default_root():
        repo = root.parent.parent
        argv = ["git", "-C", str(repo), "ls-tree", "HEAD", str(root.relative_to(repo))]
        parse = lambda out: out.split()[2] if out.startswith("160000 commit ") else ""  # noqa: E731
    else:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse(out) or None


def _options_dump(root: Path) -> Path:
    commit = sd_scripts_commit(root) or "unknown"
    return home() / "cache" / f"sd-scripts-options-{commit[:12]}.json"


class KohyaBackend:
    name = "kohya"
    families = frozenset({"sd15", "sdxl", "flux"})

    def __init__(self) -> None:
        self.cpu = True
        self.root = default_root()

    def render(self, job: JobSpec, workdir: Path, *, resume: Resume | None = None) -> Rendered:
        if job.family not in SCRIPTS:
            raise LoraforgeError(f"sd-scripts cannot train family {job.family!r}", "use sd15, sdxl or flux")
        workdir.mkdir(parents=True, exist_ok=True)
        options, notes = build_options(job, workdir, cpu=self.cpu, resume=resume)
        unknown = sorted(set(job.backend_args.get("kohya", {})) - known_options(str(self.root)))
        if unknown:
            raise LoraforgeError(
                f"backend_args.kohya: sd-scripts has no option {', '.join(unknown)}",
                "check the spelling against `python train_network.py --help` in the sd-scripts folder",
            )
        dataset_values = {
            "image_dir": str(Path(job.dataset).expanduser().resolve()),
            "resolution": job.training.resolution,
            "batch_size": job.training.batch_size,
            "repeats": job.training.repeats,
            "min_bucket": max(64, job.training.resolution // 4 // 64 * 64),
            "max_bucket": job.training.resolution * 2,
            "shuffle_caption": False,
            "keep_tokens": 1 if job.trigger else 0,
            "validation_split": job.training.validation_split,
            "seed": job.training.seed,
        }
        dataset = write_rendered(workdir / "dataset.toml", render_template("kohya/dataset.toml.j2", **dataset_values))
        config = write_rendered(
            workdir / "config.toml",
            render_template("kohya/config.toml.j2", options=options, job_name=job.name, script=SCRIPTS[job.family]),
        )
        if "sample_prompts" in options:
            (workdir / "prompts.txt").write_text(
                "".join(
                    p.replace("\n", " ") + f" --s {job.sampling.steps} --d {job.sampling.seed}\n"
                    for p in job.sampling.prompts
                ),
                encoding="utf-8",
            )
        _check_round_trip(config, options)
        parsed = tomllib.loads(dataset.read_text(encoding="utf-8"))
        subset = parsed["datasets"][0]["subsets"][0]
        if (
            subset["image_dir"] != dataset_values["image_dir"]
            or parsed["datasets"][0]["batch_size"] != job.training.batch_size
        ):
            raise LoraforgeError(f"rendered {dataset} does not match the job", "report this bug")
        accelerate = write_rendered(workdir / "accelerate.yaml", render_accelerate(job, cpu=self.cpu))
        return Rendered(
            files={"config": config, "dataset": dataset, "accelerate": accelerate},
            notes=notes,
            values=options,
        )

    def command(self, job: JobSpec, rendered: Rendered, env: BackendEnv) -> Launch:
        root = env.root or self.root
        argv = [
            str(env.python),
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(rendered.files["accelerate"]),
            SCRIPTS[job.family or "sd15"],
            "--config_file",
            str(rendered.files["config"]),
        ]
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
        return Launch(argv=argv, env=child_env, cwd=root)

    def parser(self) -> KohyaLogParser:
        return KohyaLogParser()

    def watched(self, job: JobSpec, workdir: Path) -> list[Watched]:
        # sd-scripts saves <output_name>_<step:06d>_<prompt:02d>_<time>[_<seed>].png and never prints the name
        name = re.compile(rf"^{re.escape(job.lora_name)}_(?P<step>\d{{6}})_(?P<index>\d{{2}})_\d{{14}}")
        return [SampleFolder(workdir / "output" / "kohya" / "sample", name)]

    def collect(self, job: JobSpec, workdir: Path) -> Artifacts:
        out = workdir / "output" / "kohya"
        lora = out / f"{job.lora_name}.safetensors"
        checkpoints = []
        states = []
        if out.is_dir():
            pattern = re.compile(re.escape(job.lora_name) + r"-step(\d+)(-state)?(\.safetensors)?$")
            for path in out.iterdir():
                match = pattern.match(path.name)
                if not match:
                    continue
                if match.group(2) and (path / "train_state.json").exists():
                    states.append((int(match.group(1)), path))
                elif match.group(3):
                    checkpoints.append((int(match.group(1)), path))
        checkpoints.sort()
        resume = None
        if states:
            step, state = max(states)
            with contextlib.suppress(OSError, ValueError, KeyError):
                step = int(json.loads((state / "train_state.json").read_text(encoding="utf-8"))["current_step"])
            resume = Resume(state=state, step=step)
        return Artifacts(lora=lora if lora.exists() else None, checkpoints=checkpoints, resume=resume)

    # environment -----------------------------------------------------------------------------------------------

    def check(self, env: BackendEnv) -> list[Problem]:
        setup = "loraforge setup kohya"
        root = env.root or self.root
        self.root = root
        self.cpu = not uses_cuda(env)
        if not env.python.exists():
            return [Problem(f"interpreter {env.python} does not exist", f"{setup} --force")]
        if not (root / "train_network.py").exists():
            return [Problem(*missing_sd_scripts(root))]
        installed = package_versions(env.python, ["torch", "torchvision", "accelerate", "diffusers", "transformers"])
        missing = [
            name
            for name in ("torch", "torchvision", "accelerate", "diffusers", "transformers")
            if not installed.get(name)
        ]
        if missing:
            return [
                Problem(
                    f"missing in the kohya environment: {', '.join(missing)}",
                    f"cd {root} && {env.python} -m pip install {' '.join(TORCH_PINS)} -r requirements.txt",
                )
            ]
        return []

    def setup(
        self, *, python: str | None, venv: Path | None, root: Path | None, force: bool, console: Any
    ) -> BackendEnv:
        root = (root or default_root()).resolve()
        if not (root / "train_network.py").exists():
            raise BackendNotReady(*missing_sd_scripts(root))
        if venv is not None:
            exe = venv_python(venv)
            if not exe.exists():
                raise BackendNotReady(f"--venv {venv}: no interpreter at {exe}", "pass the folder of a virtual env")
            env = describe_env(exe, root, managed=False)
        else:
            target = home() / "envs" / "kohya"
            exe = venv_python(target)
            if exe.exists() and not force:
                env = describe_env(exe, root, managed=True)
                if not self.check(env):
                    console.print(f"kohya environment already at {target} (use --force to recreate)")
                    dump_options(env)
                    return env
            interpreter, version = find_python((3, 10), (3, 13), python)
            console.print(
                f"creating {target} with Python {'.'.join(map(str, version))} ({interpreter}): torch, "
                "torchvision and sd-scripts' requirements, about 6 GB of disk, a few minutes"
            )
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([str(interpreter), "-m", "venv", str(target)], check=True, capture_output=True)
            from orchestrator.commands.setup_progress import run_pip

            run_pip([str(exe), "-m", "pip", "install", *TORCH_PINS], console=console, label="torch")
            run_pip(
                [str(exe), "-m", "pip", "install", "-r", str(root / "requirements.txt")],
                console=console,
                label="sd-scripts requirements",
                cwd=root,
            )
            env = describe_env(exe, root, managed=True)
        dump_options(env)
        return env


def render_accelerate(job: JobSpec, *, cpu: bool) -> str:
    """Every accelerate setting written out; several processes use accelerate's torchrun launcher (MULTI_GPU)."""
    processes = job.distributed.gpus * job.distributed.nodes
    if cpu and processes > 1:
        # Measured (accelerate 1.6 and 1.15, 2 processes, gloo): on CPU accelerate wraps every prepared model in
        # DistributedDataParallel, the frozen U-Net that sd-scripts prepares included, and torch refuses one
        # without trainable parameters, on every rank. SimpleTuner prepares only the LoRA and trains.
        raise LoraforgeError(
            f"distributed.gpus={job.distributed.gpus}: sd-scripts cannot train with several CPU processes "
            "(accelerate wraps its frozen U-Net in DistributedDataParallel on CPU, which torch refuses)",
            "train with one process here (--gpus 1), use --backend simpletuner (SDXL, Flux) for several CPU "
            "processes, or a machine with that many GPUs",
        )
    one_node = job.distributed.nodes == 1
    machine_rank, main_ip = node_placement(job.distributed.nodes)
    return render_template(
        "accelerate.yaml.j2",
        distributed_type="MULTI_GPU" if processes > 1 else "NO",
        processes=processes,
        machines=job.distributed.nodes,
        machine_rank=machine_rank,
        main_ip=main_ip,
        # one node: any free port, so two runs on a machine never collide (accelerate 1.6 stops on a busy port);
        # several nodes: the port they all agree on
        port=free_port() if one_node and processes > 1 else 29500 + job.training.seed % 1000,
        mixed_precision="no" if cpu or job.training.precision == "fp32" else job.training.precision,
        use_cpu=cpu,
    )


def _check_round_trip(path: Path, options: dict[str, Any]) -> None:
    parsed = tomllib.loads(path.read_text(encoding="utf-8"))
    for key, value in options.items():
        if parsed.get(key) != value:
            raise LoraforgeError(
                f"rendered {path}: {key} reads back as {parsed.get(key)!r}, not {value!r}", "report this bug"
            )


def describe_env(python: Path, root: Path, *, managed: bool) -> BackendEnv:
    versions = {
        k: v for k, v in package_versions(python, ["torch", "accelerate", "diffusers", "transformers"]).items() if v
    }
    found = python_version(python)
    if found:
        versions["python"] = ".".join(map(str, found))
    commit = sd_scripts_commit(root)
    if commit:
        versions["sd-scripts"] = commit[:12]
    if "torch" in versions:
        probe = subprocess.run(
            [str(python), "-c", "import torch; print(torch.version.cuda if torch.cuda.is_available() else 'no')"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        versions["cuda"] = probe.stdout.strip().splitlines()[-1] if probe.returncode == 0 and probe.stdout else "no"
    return BackendEnv(backend="kohya", python=python, root=root, versions=versions, managed=managed)


def dump_options(env: BackendEnv) -> None:
    """Record sd-scripts' own argparse option names for this checkout (to reject unknown backend_args early)."""
    root = env.root or default_root()
    target = _options_dump(root)
    if target.exists():
        return
    code = (
        "import json, sys\n"
        "sys.argv = ['train_network.py']\n"
        "import train_network\n"
        "parser = train_network.setup_parser()\n"
        "print(json.dumps(sorted(a.dest for a in parser._actions)))"
    )
    out = subprocess.run([str(env.python), "-c", code], capture_output=True, text=True, cwd=root, timeout=600)
    if out.returncode == 0 and out.stdout.strip():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(out.stdout.strip().splitlines()[-1], encoding="utf-8")
        known_options.cache_clear()


# --- the log parser ----------------------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR = re.compile(
    r"steps:\s+\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[(?P<elapsed>[\d:]+)<(?P<eta>[\d:?]+),\s*"
    r"(?P<rate>[\d.]+|\?)(?P<unit>s/it|it/s)(?:,\s*avr_loss=(?P<loss>[\d.eE+-]+|nan))?"
)
TOTAL = re.compile(r"total optimization steps[^:]*:\s*(\d+)")
EPOCH = re.compile(r"^epoch (\d+)/(\d+)")
SAVED = re.compile(r"saving checkpoint: (.+\.safetensors)")
SKIP = re.compile(r"skipping (\d+) steps")
STATE = re.compile(r"saving state at step (\d+)")
SEGMENT = re.compile(r"[\r\n]")
# sd-scripts' validation bars ("validation steps" every N steps, "epoch validation steps" at each epoch's end) carry the
# running mean of the held-out loss; the last draw (n == total) holds the measurement.
VAL_BAR = re.compile(
    r"validation steps:\s+\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[.*?val_(?:epoch_)?avg_loss=(?P<loss>[\d.eE+-]+|nan)"
)


@cache  # a log repeats few distinct clocks
def _seconds(clock: str) -> float | None:
    if "?" in clock:
        return None
    parts = [int(p) for p in clock.split(":")]
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return float(seconds)


class KohyaLogParser:
    """Incremental: bytes in any chunking from either stream; a segment ends at \\n or \\r."""

    def __init__(self) -> None:
        self.partial = {"stdout": b"", "stderr": b""}
        self.total: int | None = None
        self.offset = 0  # steps skipped on resume: the bar restarts at 0 but the run does not
        self.epoch: int | None = None
        self.epochs: int | None = None
        self.last: tuple[int, float | None] | None = None
        self.tail: deque[str] = deque(maxlen=40)
        self.phase: str | None = None
        self.last_step = 0
        self.validated: set[int] = set()  # steps that already have a Validation event
        self.ranks = RankWatch()  # several processes: which rank failed first
        self.val_pending: Validation | None = None  # the newest complete validation draw, sent when the bar is done

    def feed(self, data: bytes, stream: str) -> list[Event]:
        buffer = self.partial[stream] + data
        cut = max(buffer.rfind(b"\n"), buffer.rfind(b"\r"))
        if cut < 0:
            self.partial[stream] = buffer
            return []
        self.partial[stream] = buffer[cut + 1 :]
        text = buffer[:cut].decode("utf-8", "replace")  # one decode per chunk, not per segment: the hot path
        events: list[Event] = []
        for segment in SEGMENT.split(text):
            if segment:
                events.extend(self._segment(segment))
        return events

    def finish(self, returncode: int) -> list[Event]:
        events: list[Event] = []
        for stream in ("stdout", "stderr"):
            if self.partial[stream]:
                events.extend(self._segment(self.partial[stream].decode("utf-8", "replace")))
                self.partial[stream] = b""
        if self.val_pending is not None:
            events.append(self._flush_validation())
        if returncode != 0:
            events.append(self.failure(returncode))
        return events

    def _set_phase(self, name: str) -> list[Event]:
        if self.phase == name:
            return []
        self.phase = name
        return [Phase(name)]

    def _segment(self, raw: str) -> list[Event]:
        line = ANSI.sub("", raw) if "\x1b" in raw else raw
        if line.startswith("[rank"):  # torch prefixes a rank's traceback: its errors count, only rank 0's output
            rank, line = split_rank(line)
            self.ranks.see(rank, line)
            if rank:
                self.tail.append(f"[rank{rank}]: {line.rstrip()}")
                return []
        elif "Root Cause" in line or self.ranks.root_pending:
            self.ranks.see(None, line)
        if "validation steps:" in line:  # before the training bar: it would match BAR too
            self._validation(line)
            return []
        if self.val_pending is not None:
            return [self._flush_validation(), *self._line(line)]
        return self._line(line)

    def _line(self, line: str) -> list[Event]:
        if "steps:" in line:
            match = BAR.search(line)
            if match:
                return self._bar(match)
        stripped = line.strip()
        if not stripped:
            return []
        self.tail.append(line.rstrip())
        # substring tests before regexes: most lines match nothing, and this is the parser's hot path
        if "optimization steps" in line and (match := TOTAL.search(line)):
            self.total = int(match.group(1))
            return self._set_phase("training")
        if "skipping" in line and (match := SKIP.search(line)):
            self.offset = int(match.group(1))
            return [Log("info", f"resumed: skipping {self.offset} steps already trained")]
        if stripped.startswith("epoch ") and (match := EPOCH.match(stripped)):
            self.epoch, self.epochs = int(match.group(1)), int(match.group(2))
            return []
        if "saving checkpoint:" in line and (match := SAVED.search(line)):
            path = match.group(1).strip()
            step_match = re.search(r"-step(\d+)\.safetensors$", path)
            if step_match is None:  # the final LoRA, not an intermediate checkpoint
                return self._set_phase("saving")
            return [Checkpoint(path, int(step_match.group(1)))]
        if self.phase == "training":
            return []
        lower = line.lower()
        if "caching latents" in lower:
            return self._set_phase("caching")
        if "loading" in lower and self.phase is None:
            return self._set_phase("loading")
        return []

    def _validation(self, line: str) -> None:
        # tqdm draws n == total first with the previous running mean, then again after set_postfix: keep the
        # newest draw and send it once another line shows the bar has finished.
        match = VAL_BAR.search(line)
        if match is None or match.group("n") != match.group("total") or match.group("loss") == "nan":
            return
        step = self.last_step
        if step in self.validated:
            return
        if line.lstrip().startswith("epoch") and self.val_pending is not None and self.val_pending.step == step:
            return  # the epoch-end pass right after the every-N-steps pass measured the same step
        self.val_pending = Validation(step=step, loss=float(match.group("loss")))

    def _flush_validation(self) -> Validation:
        event, self.val_pending = self.val_pending, None
        assert event is not None
        self.validated.add(event.step)
        return event

    def _bar(self, match: re.Match[str]) -> list[Event]:
        # the hot path on bar-heavy logs: one group() call, no regex or function call that can be skipped
        n_text, total_text, loss_text, rate, unit, eta = match.group("n", "total", "loss", "rate", "unit", "eta")
        n = int(n_text)
        step = self.offset + n
        last = self.last
        # a step's first draw still shows the previous step's average; its own comes with the next draw
        loss = float(loss_text) if loss_text and last is not None and step == last[0] else None
        if n == 0 or last == (step, loss):
            return []
        it_per_s = None
        if rate != "?":
            value = float(rate)
            it_per_s = value if unit == "it/s" else (1 / value if value else None)
        self.last = (step, loss)
        self.last_step = step
        # stdout's "saving checkpoint" line for the final LoRA can overtake the last step's second draw on stderr:
        # that late draw still carries the final loss, but training is not starting again
        events: list[Event] = [] if self.phase in ("training", "saving") else self._set_phase("training")
        events.append(
            Progress(
                step=step,
                total=self.total or self.offset + int(total_text),
                epoch=self.epoch,
                epochs=self.epochs,
                loss=loss,
                it_per_s=it_per_s,
                eta_s=_seconds(eta),
            )
        )
        return events

    def failure(self, returncode: int) -> Failure:
        return with_rank(self._failure(returncode), self.ranks.failure(), "sd-scripts")

    def _failure(self, returncode: int) -> Failure:
        tail = [line for line in self.tail if line.strip()][-20:]
        text = "\n".join(self.tail)
        errors = [line.strip() for line in self.tail if re.match(r"\s*[\w.]+(Error|Exception)\b", line)]
        # the trainer's own error, not accelerate's CalledProcessError that follows it
        own = [e for e in errors if not e.startswith("subprocess.CalledProcessError")]
        message = own[-1] if own else (errors[-1] if errors else f"sd-scripts exited with code {returncode}")
        kind, hint = "other", "see the log for the full traceback"
        if re.search(r"out of memory|CUDA out of memory|OutOfMemoryError|DefaultCPUAllocator: can't allocate", text):
            kind, hint = (
                "out_of_memory",
                "lower training.batch_size or training.resolution, or enable gradient checkpointing",
            )
        elif re.search(r"ModuleNotFoundError|ImportError|No module named", text):
            kind, hint = "not_installed", "repair the environment: loraforge setup kohya --force"
        elif re.search(
            r"neither a valid local path nor a valid repo id|does not exist|No such file or directory.*(model|safetensors)|not found: .*model",
            text,
            re.I,
        ):
            kind, hint = (
                "model_not_found",
                "check base_model: a local .safetensors file, a diffusers folder or a hub id",
            )
        elif re.search(r"error: unrecognized arguments|error: argument|invalid choice", text):
            kind, hint = "bad_argument", "check backend_args.kohya against `python train_network.py --help`"
        elif returncode in (130, 143, 137) and not errors:
            kind = "interrupted" if returncode == 130 else "killed"
            hint = "resume it with `loraforge resume RUN`"
        return Failure(kind=kind, message=message[:300], hint=hint, log_tail=tail)
