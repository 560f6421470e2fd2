"""JobSpec: the one validated description of a training job.

Layers, lowest first: built-in defaults < preset < job file < CLI flags (< ``--set a.b=value``). Every layer is a
plain nested dict; :func:`merge_layers` folds them and :func:`build_job` validates the result once, reporting
every problem at once with its dotted field path, the value given and what is allowed.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from orchestrator.errors import ConfigError, LoraforgeError
from orchestrator.family import Family
from orchestrator.userpath import user_path

Subject = Literal["face", "object", "style"]
Precision = Literal["fp32", "fp16", "bf16"]
Optimizer = Literal["adamw", "adamw8bit", "adafactor", "prodigy", "lion", "sgd", "dadaptadam"]
Scheduler = Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"]
NetworkType = Literal["lora", "locon", "loha", "lokr", "ia3", "dylora", "glora", "boft", "diag-oft"]
LoraFormat = Literal["kohya", "diffusers"]

ArgValue = str | int | float | bool | None | list[str | int | float | bool]
# Numbers are numbers: `steps: true` or `rank: "16"` is an error, not 1 step or a silent conversion.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]


class _Model(BaseModel):
    # no NaN or infinity anywhere: no trainer takes them, and JSON cannot even write them
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Network(_Model):
    type: NetworkType = Field("lora", description="LoRA or a LyCORIS algorithm")
    rank: Int = Field(
        16,
        ge=1,
        le=100_000,
        description="network dim: the adapter's rank (LoKr uses huge values for full-rank factors)",
    )
    alpha: Float | None = Field(None, gt=0, description="scale = alpha / rank; default: equal to rank")
    dropout: Float | None = Field(None, ge=0, lt=1)
    args: dict[str, ArgValue] = Field(default_factory=dict, description="extra network arguments (conv_dim, ...)")


class Training(_Model):
    learning_rate: Float = Field(1e-4, gt=0, le=1, description="UNet / transformer learning rate")
    text_encoder_lr: Float | None = Field(None, ge=0, le=1, description="0 or unset: text encoder not trained")
    steps: Int | None = Field(None, ge=1, description="optimizer steps; or give epochs")
    epochs: Int | None = Field(None, ge=1)
    repeats: Int = Field(1, ge=1, description="how often each image is seen per epoch")
    batch_size: Int = Field(1, ge=1, le=256)
    gradient_accumulation: Int = Field(1, ge=1, le=1024)
    resolution: Int = Field(1024, ge=64, le=4096, description="training resolution in pixels (bucketed)")
    optimizer: Optimizer = "adamw"
    scheduler: Scheduler = "constant"
    warmup_steps: Int = Field(0, ge=0)
    seed: Int = Field(42, ge=0)
    precision: Precision = Field(
        "bf16", description="mixed precision; on CPU fp32, except where a trainer needs bf16 to fit (a note says so)"
    )
    gradient_checkpointing: bool = True
    cache_latents: bool = True
    noise_offset: Float | None = Field(None, ge=0, le=1)
    min_snr_gamma: Float | None = Field(None, gt=0)
    validation_split: Float = Field(0.0, ge=0, lt=1, description="share of images held out for validation loss")
    shuffle_captions: bool = Field(
        False, description="shuffle a caption's comma-separated tags each step (the trigger stays in front)"
    )

    @field_validator("resolution")
    @classmethod
    def _multiple_of_64(cls, value: int) -> int:
        if value % 64:
            raise ValueError(f"must be a multiple of 64 (e.g. {value // 64 * 64 or 64} or {(value // 64 + 1) * 64})")
        return value


class Saving(_Model):
    every_n_steps: Int | None = Field(None, ge=1, description="checkpoint every N steps")
    keep_last: Int | None = Field(None, ge=1, description="keep only the newest K checkpoints")
    format: LoraFormat = Field("kohya", description="key layout of the final LoRA file")


class Sampling(_Model):
    every_n_steps: Int | None = Field(None, ge=1)
    prompts: list[str] = Field(default_factory=list)
    seed: Int = 42
    steps: Int = Field(20, ge=1)

    @field_validator("prompts")
    @classmethod
    def _one_line_each(cls, prompts: list[str]) -> list[str]:
        """sd-scripts' prompt file is one prompt a line, its options after ` --` (--w 8192, --n ...), `#` a comment:
        a prompt must be one non-empty line that starts no comment and holds no option."""
        for i, prompt in enumerate(prompts):
            if not prompt.strip():
                raise ValueError(f"prompt {i} is empty")
            if re.search(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]", prompt):
                raise ValueError(f"prompt {i} holds a line break or control character: write it on one line")
            if re.search(r"(?:^|\s)--", prompt):
                raise ValueError(f"prompt {i} holds ' --', which starts a sampler option (--w 8192) in sd-scripts")
            if prompt.lstrip().startswith("#"):
                raise ValueError(f"prompt {i} starts with '#', which sd-scripts' prompt file reads as a comment")
        return prompts


class Output(_Model):
    dir: Path = Field(Path("runs"), description="folder that holds run folders")
    name: str | None = Field(None, description="file name of the LoRA, without .safetensors; default: the job name")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        return _file_name(value)


def _file_name(value: str | None) -> str | None:
    if value is not None and (not value.strip() or any(c in value for c in "/\\\0\n\r") or value.startswith(".")):
        raise ValueError("must be a plain file name (no folders, not hidden)")
    return value


class Distributed(_Model):
    gpus: Int = Field(1, ge=1, description="processes per node")
    nodes: Int = Field(1, ge=1)
    ddp_timeout_minutes: Int | None = Field(None, ge=1)


class JobSpec(_Model):
    name: str = Field(..., min_length=1, max_length=100, description="job name; used for the run folder")
    base_model: str = Field(..., min_length=1, description="local file or folder, or a Hugging Face hub id")
    family: Family | None = Field(None, description="inferred from the model files where possible")
    subject: Subject = "face"
    trigger: str | None = Field(None, description="unique token that activates the learned identity")
    add_trigger: bool = Field(
        False,
        description="captions without the trigger get it in front, in the run's copy only (the dataset is not "
        "changed); otherwise a run over such captions is refused",
    )
    dataset: Path = Field(..., description="folder of images with .txt captions")
    network: Network = Field(default_factory=Network)
    training: Training = Field(default_factory=Training)
    saving: Saving = Field(default_factory=Saving)
    sampling: Sampling = Field(default_factory=Sampling)
    output: Output = Field(default_factory=Output)
    distributed: Distributed = Field(default_factory=Distributed)
    backend_args: dict[str, dict[str, ArgValue]] = Field(
        default_factory=dict, description="raw options passed to one backend only, e.g. backend_args.kohya"
    )

    @field_validator("trigger")
    @classmethod
    def _one_line_trigger(cls, value: str | None) -> str | None:
        if value is not None and re.search(r"[\x00-\x1f\x7f\x85\u2028\u2029]", value):
            raise ValueError("a trigger is one line of text: no line breaks or control characters")
        return value

    @field_validator("backend_args")
    @classmethod
    def _no_secrets(cls, value: dict[str, dict[str, ArgValue]]) -> dict[str, dict[str, ArgValue]]:
        from orchestrator.secrets import HOW_TO_PASS, is_secret

        for backend, options in value.items():
            secrets = sorted(name for name in options if is_secret(name))
            if secrets:  # named, never shown: a job file is written into every run folder
                raise ValueError(f"backend_args.{backend}.{secrets[0]} holds a secret; {HOW_TO_PASS}")
        return value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it names folders and files)")
        return value

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> JobSpec:
        if self.training.steps is None and self.training.epochs is None:
            raise ValueError("training.steps or training.epochs is required (e.g. training.steps=1000)")
        return self

    @property
    def lora_name(self) -> str:
        return self.output.name or self.name

    @property
    def alpha(self) -> float:
        return self.network.alpha if self.network.alpha is not None else float(self.network.rank)


# --- layering -------------------------------------------------------------------------------------------------


def merge_layers(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge dicts, later layers winning. ``steps`` and ``epochs`` replace each other across layers."""
    result: dict[str, Any] = {}
    for layer in layers:
        layer = copy.deepcopy(layer)
        training = layer.get("training")
        if isinstance(training, dict) and isinstance(result.get("training"), dict):
            # A later layer that says how long to train replaces an earlier layer's way of saying it.
            if "steps" in training and "epochs" not in training:
                result["training"].pop("epochs", None)
            if "epochs" in training and "steps" not in training:
                result["training"].pop("steps", None)
        _deep_update(result, layer)
    return result


def _deep_update(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict) and key not in ("args",):
            _deep_update(target[key], value)
        else:
            target[key] = value


_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
MAX_ALIASES = 100  # YAML aliases a settings file may use: enough for any real file
# Values a settings file may expand to through its aliases: 9 levels of 9 aliases each (81 aliases) already expand to
# 9^9 values, so the count of aliases alone is no bound on a "billion laughs" file; this is.
MAX_EXPANDED = 100_000
MAX_YAML_BYTES = 1024 * 1024


class StrictLoader(yaml.SafeLoader):
    """YAML for settings files: a repeated key is an error (not silently the last one), aliases are bounded (a
    "billion laughs" file is refused, not expanded), and an unquoted ``1e-4`` is a float as people mean it (YAML
    1.1 wants ``1.0e-4``) while a quoted ``"1e5"`` stays the string it says it is."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases (*name): refused")
        return super().compose_node(parent, index)

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None and _expanded_size(node, {}) > MAX_EXPANDED:
            raise yaml.YAMLError(f"its aliases expand to more than {MAX_EXPANDED} values (a 'billion laughs'): refused")
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise yaml.constructor.ConstructorError(None, None, "a key must be plain text", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {str(key)[:60]!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` becomes with every alias expanded (a shared node counts once per use); capped just
    above MAX_EXPANDED. A node met again while its own size is being counted (a recursive alias) counts as too many."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = MAX_EXPANDED + 1
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = min(total, MAX_EXPANDED + 1)
    return sizes[id(node)]


StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def read_yaml(path: Path, what: str = "settings file") -> Any:
    """A YAML settings file's content, or one error naming the file and the problem: missing, not text, not UTF-8,
    too big, not YAML, repeated keys, aliases that expand too far."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LoraforgeError(f"{what} {path} does not exist", "check the path") from None
    except IsADirectoryError:
        raise LoraforgeError(f"{what} {path} is a folder, not a file", "pass the YAML file") from None
    if len(raw) > MAX_YAML_BYTES:
        raise LoraforgeError(f"cannot read the {what} {path}: {len(raw) // 1024} KiB, more than a settings file (1 MiB)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoraforgeError(
            f"cannot read the {what} {path}: not UTF-8 text (byte {exc.start})", "save it as UTF-8"
        ) from None
    return parse_yaml(text, f"the {what} {path}")


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise LoraforgeError(f"cannot read {source}: not valid YAML: {_short(str(exc), 400)}") from None
    except RecursionError:
        raise LoraforgeError(f"cannot read {source}: it nests too deeply to be a settings file") from None


def parse_assignment(text: str) -> dict[str, Any]:
    """``training.learning_rate=1e-4`` -> ``{"training": {"learning_rate": 0.0001}}`` (value read as YAML)."""
    if "=" not in text:
        raise ConfigError([f"--set {_short(text)!r}: expected KEY=VALUE, e.g. network.rank=32"])
    key, _, raw = text.partition("=")
    value = parse_scalar(raw)
    node: dict[str, Any] = {}
    parts = key.strip().split(".")
    cursor = node
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return node


def parse_scalar(raw: str) -> Any:
    """A command-line value read as YAML (``1e-4`` a float, ``"1e5"`` a string); text that is not YAML stays text."""
    raw = raw.strip()
    if not raw:
        return ""
    try:
        return yaml.load(raw, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except (yaml.YAMLError, RecursionError):
        return raw


def _short(text: str, limit: int = 80) -> str:
    """Quoted values are cut: an error message is one readable line, whatever the input."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_yaml_layer(path: Path) -> dict[str, Any]:
    """Read a job file as a layer. Relative paths in it are relative to the file's folder."""
    data = read_yaml(path, "job file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}"])
    base = path.parent
    for key in ("dataset", "base_model"):
        value = data.get(key)
        if isinstance(value, str) and (value.startswith(("./", "../")) or key == "dataset"):
            candidate = user_path(value)
            if not candidate.is_absolute():
                data[key] = str((base / candidate).resolve())
    output = data.get("output")
    if isinstance(output, dict) and isinstance(output.get("dir"), str) and not Path(output["dir"]).is_absolute():
        output["dir"] = str((base / output["dir"]).resolve())
    return data


def build_job(data: dict[str, Any], source: str | None = None) -> JobSpec:
    """Validate a merged layer dict into a JobSpec, or raise ConfigError listing every problem."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([describe_error(err) for err in exc.errors()], source) from None


def describe_error(err: Any) -> str:
    path = _short(".".join(str(p) for p in err["loc"]) or "(job)")
    kind = err["type"]
    given = _short(repr(err.get("input")))
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"{path}: unknown setting (given {given}); check the spelling, see `loraforge render --explain`"
    if kind == "missing":
        return f"{path}: required, not given"
    if kind == "literal_error":
        return f"{path}: got {given}; allowed: {ctx.get('expected')}"
    if kind == "finite_number":
        return f"{path}: got {given}; must be a finite number"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if "holds a secret" in msg:
        return f"{path}: {_short(msg, 200)}"  # the value is never shown
    return f"{path}: got {given}; {_short(msg, 200)}"


def job_to_dict(job: JobSpec) -> dict[str, Any]:
    """Plain, YAML-safe dict (paths as absolute strings), suitable for job.yaml in a run folder."""
    data = job.model_dump(mode="json")
    data["dataset"] = str(user_path(job.dataset).resolve())
    data["output"]["dir"] = str(user_path(job.output.dir).resolve())
    return data


def dump_job(job: JobSpec) -> str:
    return yaml.safe_dump(job_to_dict(job), sort_keys=False, allow_unicode=True)
