"""What Kohya GUI and sd-scripts preset import share: the report, the rule tables, and value coercion.

The per-key rules are data (``kohya_gui_keys.tsv``, ``sd_scripts_keys.tsv``, ``kohya_lora_types.tsv``; sd-scripts'
own options and optimizers are in backends/kohya); the importers (kohya_gui_import, sd_scripts_import) apply them.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, get_args

from backends.kohya.options import any_script_option, loraforge_optimizer
from orchestrator.errors import ConfigError, LoraforgeError
from orchestrator.job import NetworkType, Scheduler, build_job, merge_layers
from orchestrator.secrets import is_secret

HERE = Path(__file__).resolve().parent
SCHEDULERS = frozenset(get_args(Scheduler))
# network types sd-scripts trains through lycoris.kohya with algo=<type> (the others: networks.lora, networks.dylora)
LYCORIS_ALGOS = frozenset(get_args(NetworkType)) - {"lora"}
SECRET = "secret: not imported"
# A preset need not say what a job must: these make a layer a JobSpec to check or export; none of them is kept.
PLACEHOLDER = {"name": "preset", "base_model": "-", "dataset": "-"}


@dataclass(frozen=True)
class Entry:
    key: str
    status: str  # "mapped" | "ignored"
    detail: str


@dataclass
class ImportReport:
    source: str
    kind: str  # "kohya-gui" | "sd-scripts"
    layer: dict[str, Any]
    entries: list[Entry] = field(default_factory=list)

    def mapped(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "mapped"]

    def ignored(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "ignored"]

    def text(self) -> str:
        lines = [f"imported {self.source} ({self.kind}): {len(self.mapped())} mapped, {len(self.ignored())} ignored"]
        for entry in sorted(self.entries, key=lambda e: (e.status, e.key.lower())):
            lines.append(f"  {entry.status:<7} {entry.key}: {entry.detail}")
        return "\n".join(lines) + "\n"


class Importer:
    """Builds one report: every key of the file becomes exactly one entry."""

    def __init__(self, source: str, kind: str) -> None:
        self.report = ImportReport(source, kind, {})

    def each(self, data: dict[str, Any], rule: Callable[[str, Any], None]) -> ImportReport:
        """Apply ``rule`` to every key, secrets aside (named, their value never looked at); a value no rule can read
        stops the import naming its key, then every imported value is checked against the job's own rules."""
        for key in sorted(data, key=str.lower):
            if is_secret(key):
                self.secret(key)
                continue
            value = data[key]
            if not finite(value):
                raise LoraforgeError(
                    f"{self.report.source}: {key} is {short(value)}, not a finite number",
                    "give a number (or delete the key: the default applies)",
                )
            try:
                rule(key, value)
            except (ValueError, TypeError) as exc:
                raise LoraforgeError(
                    f"{self.report.source}: {key} = {short(value, 60)} cannot be read ({short(exc, 120)})",
                    "fix the value in the preset, or delete the key (the default applies)",
                ) from None
        check_layer(self.report)
        return self.report

    def map(self, key: str, path: str, value: Any, why: str = "") -> None:
        put(self.report.layer, path, value)
        self.report.entries.append(Entry(key, "mapped", f"{path} = {value!r}" + (f" ({why})" if why else "")))

    def ignore(self, key: str, reason: str) -> None:
        self.report.entries.append(Entry(key, "ignored", reason))

    def secret(self, key: str) -> None:
        """A credential: named in the report, its value never read into the layer, shown or written."""
        self.ignore(key, SECRET)

    def kohya(self, key: str, option: str, value: Any) -> None:
        self.map(key, f"backend_args.kohya.{option}", value, "sd-scripts option")

    def optimizer(self, key: str, value: Any) -> None:
        name = loraforge_optimizer(str(value))
        if name:
            self.map(key, "training.optimizer", name)
        else:
            self.kohya(key, "optimizer_type", str(value))

    def scheduler(self, key: str, value: Any) -> None:
        name = str(value).strip()
        if name in SCHEDULERS:
            self.map(key, "training.scheduler", name)
        else:
            self.kohya(key, "lr_scheduler", name)


def check_layer(report: ImportReport) -> None:
    """The imported settings must make a valid job (a negative learning rate, a rank of 0 are refused here, not
    at training time); each problem names the preset key it came from."""
    training = report.layer.get("training", {})
    length = {} if training.get("steps") or training.get("epochs") else {"training": {"epochs": 1}}
    try:
        build_job(merge_layers(PLACEHOLDER, length, report.layer), report.source)
    except ConfigError as exc:
        problems = []
        for problem in exc.problems:
            path = problem.partition(":")[0]
            said = re.compile(rf"(?:^|[ ,]){re.escape(path)}(?: =|,|;|$)")
            keys = [e.key for e in report.mapped() if said.search(e.detail)]
            problems.append(f"{' / '.join(keys) or path} -> {problem}")
        raise LoraforgeError(
            f"{report.source}: settings loraforge cannot train with: " + "; ".join(problems),
            "fix those keys in the preset, or delete them (the defaults apply)",
        ) from None


def finite(value: Any, depth: int = 0) -> bool:
    """No NaN or infinity anywhere in a value (JSON's NaN/Infinity, TOML's nan/inf)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)) and depth < 50:
        return all(finite(v, depth + 1) for v in value)
    if isinstance(value, dict) and depth < 50:
        return all(finite(v, depth + 1) for v in value.values())
    return True


def short(value: Any, limit: int = 80) -> str:
    """A value as an error message quotes it: one line, cut."""
    text = " ".join((str(value) if isinstance(value, BaseException) else repr(value)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def put(layer: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path (``training.seed``) in a nested layer."""
    node = layer
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


# --- the rule tables ------------------------------------------------------------------------------------------


@cache
def rules(name: str) -> dict[str, tuple[str, str, str]]:
    """key -> (action, target, note) from one of the key tables."""
    table: dict[str, tuple[str, str, str]] = {}
    for line in (HERE / name).read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#") or line.startswith("key\t"):
            continue
        parts = (line.split("\t") + ["", "", ""])[:4]
        table[parts[0]] = (parts[1], parts[2], parts[3])
    return table


@cache
def lora_types() -> dict[str, str]:
    """Kohya GUI LoRA_type -> loraforge network.type."""
    return {row[0]: row[1] for row in _lora_type_rows()}


@cache
def gui_lora_type(network_type: str) -> str:
    """The LoRA_type export writes for a network type."""
    return next(row[0] for row in _lora_type_rows() if row[1] == network_type and row[2] == "yes")


def _lora_type_rows() -> list[list[str]]:
    lines = (HERE / "kohya_lora_types.tsv").read_text(encoding="utf-8").splitlines()
    return [(line.split("\t") + [""])[:3] for line in lines if line and not line.startswith(("#", "LoRA_type\t"))]


def typed_option(name: str, value: Any) -> Any:
    """A GUI value typed like sd-scripts' option ("75" -> 75 for an int option); None if empty."""
    kind, _ = any_script_option(name) or ("str", None)
    if empty(value):
        return None
    try:
        if kind == "int":
            return int(_to_number(value))
        if kind == "float":
            return _to_number(value)
        if kind == "bool":
            return to_bool(value)
        if kind == "list":
            return convert("list", value)
    except ValueError:
        return value
    return value


# --- value coercion -------------------------------------------------------------------------------------------


def empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _to_number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    return float(str(value).strip())


def convert(kind: str, value: Any) -> Any:
    """Coerce one value by rule name; None means "not set" (empty, or 0 where 0 means off)."""
    if kind in ("int", "float", "int_or_unset", "float_or_unset") and empty(value):
        return None
    if kind == "int":
        return int(_to_number(value))
    if kind == "float":
        return _to_number(value)
    if kind == "int_or_unset":
        number = int(_to_number(value))
        return number or None
    if kind == "float_or_unset":
        number = _to_number(value)
        return number or None
    if kind == "bool":
        return to_bool(value)
    if kind in ("str", "str_or_unset"):
        return None if empty(value) else str(value)
    if kind == "list":
        if isinstance(value, list):
            return [str(v) for v in value] or None
        return shlex.split(str(value)) or None
    if kind == "resolution":
        if isinstance(value, (int, float)):
            side = int(value)
        elif isinstance(value, (list, tuple)):
            side = max(int(v) for v in value)
        else:
            side = max(int(v) for v in str(value).replace("x", ",").split(",") if v.strip())
        return max(64, round(side / 64) * 64)
    if kind == "precision":
        text = str(value).strip().lower()
        return {"no": "fp32", "fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}.get(text)
    raise ValueError(f"unknown conversion {kind}")


def scalar(text: str) -> Any:
    """A command-line value read as YAML would read it ("0" -> 0, "true" -> True, "xl loha" stays a string)."""
    from orchestrator.job import parse_scalar

    return parse_scalar(text)
