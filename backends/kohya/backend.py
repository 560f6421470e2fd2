"""The kohya backend: kohya-ss sd-scripts run as ``python -m accelerate.commands.launch --config_file accelerate.yaml
SCRIPT --config_file config.toml`` in its own venv, with the sd-scripts checkout as working directory.

The class only ties the modules together (families, parts, options, env, logs); it keeps no state between calls.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backends.base import Artifacts, Endpoint, Launch, Problem, Rendered, Resume, SetupRequest, Warm
from backends.kohya import caches, parts
from backends.kohya import env as kohya_env
from backends.kohya.families import REFUSED, SCRIPTS, check_network, family
from backends.kohya.logs import KohyaLogParser
from backends.kohya.options import (
    build_options,
    dataset_values,
    prompt_lines,
    render_accelerate,
    unknown_options,
)
from backends.kohya.warm import warm as warm_spec
from orchestrator.captions.trigger import has_trigger
from orchestrator.dataset.model import Dataset, write_run_copy
from orchestrator.envs import BackendEnv
from orchestrator.errors import LoraforgeError
from orchestrator.job import JobSpec
from orchestrator.render import render_template, write_rendered
from orchestrator.runs import RunDir
from orchestrator.watch import SampleFolder


def output_dir(run: RunDir) -> Path:
    """Where sd-scripts writes its LoRA, checkpoints, states and samples: inside the run's output folder."""
    return run.output / "kohya"


class KohyaBackend:
    name = "kohya"
    label = "sd-scripts"
    families = frozenset(SCRIPTS)
    refused: Mapping[str, str] = REFUSED
    webhooks = False

    def setup(self, request: SetupRequest, console: Any) -> BackendEnv:
        return kohya_env.setup(request, console)

    def check(self, env: BackendEnv) -> list[Problem]:
        return kohya_env.check(env)

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
        # everything that can refuse the job runs before anything is written
        spec = family(job.family)
        check_network(job)
        unknown_options(job, kohya_env.known_options(env.root or kohya_env.default_root(), spec.script))
        found = parts.resolve(job, spec)
        folder, output = run.rendered, output_dir(run)
        tokenizers = folder / "tokenizers" if found.tokenizers else None
        options, notes = build_options(
            job, rendered=folder, output=output, tokenizers=tokenizers, cpu=env.cpu, resume=resume, parts=found.options
        )
        notes += found.notes
        prompts = prompt_lines(job) if "sample_prompts" in options else None
        accelerate = render_accelerate(job, cpu=env.cpu)
        notes += _trigger_notes(job, dataset)

        write_run_copy(dataset.images, run.data, dataset.root)
        if tokenizers is not None:
            _copy_tokenizers(found.tokenizers, tokenizers)
        values = dataset_values(job, run.data)
        dataset_file = write_rendered(folder / "dataset.toml", render_template("kohya/dataset.toml.j2", **values))
        config = write_rendered(
            folder / "config.toml",
            render_template("kohya/config.toml.j2", options=options, job_name=job.name, script=spec.script),
        )
        if prompts is not None:
            write_rendered(folder / "prompts.txt", prompts)
        _check_read_back(config, options, tomllib.loads(config.read_text(encoding="utf-8")))
        read = _dataset_read_back(dataset_file)
        _check_read_back(dataset_file, {key: values[key] for key in read}, read)
        files = {
            "config": config,
            "dataset": dataset_file,
            "accelerate": write_rendered(folder / "accelerate.yaml", accelerate),
        }
        # sd-scripts saves <output_name>_<step:06d>_<prompt:02d>_<time>[_<seed>].png and never prints the name
        sample = re.compile(rf"^{re.escape(job.lora_name)}_(?P<step>\d{{6}})_(?P<index>\d{{2}})_\d{{14}}")
        return Rendered(
            files=files,
            data=run.data,
            notes=notes,
            values=options,
            watched=[SampleFolder(output / "sample", sample)],
            reuse=caches.reuse(job, options, found.options, run.data, dataset_file, env),
        )

    def command(self, job: JobSpec, rendered: Rendered, env: BackendEnv) -> Launch:
        argv = [
            str(env.python),
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(rendered.files["accelerate"]),
            family(job.family).script,
            "--config_file",
            str(rendered.files["config"]),
        ]
        settings = {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
        return Launch(argv=argv, env=settings, cwd=env.root or kohya_env.default_root())

    def parser(self, rendered: Rendered | None = None) -> KohyaLogParser:
        return KohyaLogParser()

    def warm(self, env: BackendEnv) -> Warm:
        return warm_spec(env)

    def collect(self, job: JobSpec, run: RunDir) -> Artifacts:
        out = output_dir(run)
        lora = out / f"{job.lora_name}.safetensors"
        checkpoints: list[tuple[int, Path]] = []
        states: list[tuple[int, Path]] = []
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


def _copy_tokenizers(sources: dict[str, Path], target: Path) -> None:
    """The run's own tokenizer cache (sd-scripts writes into one that lacks an entry: never into a model folder)."""
    for entry, source in sources.items():
        if not (target / entry).exists():
            shutil.copytree(source, target / entry)


def _trigger_notes(job: JobSpec, dataset: Dataset) -> list[str]:
    """keep_tokens = 1 keeps the first comma-separated token in place; a caption whose first token is not the
    trigger has it shuffled with the rest (still trained, no longer in front)."""
    if not (job.trigger and job.training.shuffle_captions):
        return []
    elsewhere = [i for i in dataset.images if not has_trigger((i.caption or "").split(",")[0].strip(), job.trigger)]
    if not elsewhere:
        return []
    return [
        f"training.shuffle_captions: {len(elsewhere)} of {dataset.count} captions do not start with the trigger "
        f"{job.trigger!r} (e.g. {elsewhere[0].name}); it is shuffled with their other tags"
    ]


def _check_read_back(path: Path, intended: dict[str, Any], found: dict[str, Any]) -> None:
    """A rendered file parsed back must say what was meant: a template or filter bug stops here, not in sd-scripts."""
    for key, value in intended.items():
        if found.get(key) != value:
            raise LoraforgeError(
                f"rendered {path}: {key} reads back as {found.get(key)!r}, not {value!r}", "report this bug"
            )


def _dataset_read_back(path: Path) -> dict[str, Any]:
    parsed = tomllib.loads(path.read_text(encoding="utf-8"))
    group = parsed["datasets"][0]
    subset = group["subsets"][0]
    return {
        "image_dir": subset["image_dir"],
        "resolution": group["resolution"][0],
        "batch_size": group["batch_size"],
        "repeats": subset["num_repeats"],
        "shuffle_caption": parsed["general"]["shuffle_caption"],
        "keep_tokens": parsed["general"]["keep_tokens"],
    }
