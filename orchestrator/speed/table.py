"""The expected-speed table (expected.tsv) and how a run is matched to the closest comparable figure in it.

A figure is compared with a run only when it is the same card and model family, a precision that is no faster than
the run's, gradient checkpointing on if the run has it on, and within 4x of the run in pixels per image and in
images per optimizer step. It is then scaled so that it never predicts a step faster than the run's can be:

- more pixels or more images than the figure: linear (attention and batching make real steps grow no faster than
  that over a 4x range: SimpleTuner's FLUX guide reports 2.5x the time for 4x the pixels);
- fewer pixels: by the square root of the ratio (fixed per-step costs do not shrink with the image);
- fewer images per step: not scaled (a step on fewer images is not slower).

So a run flagged as more than twice as slow as the scaled figure is slow beyond doubt, not by a rounding of the
scaling rule. Nothing close enough: no comparison, and nothing is said.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
TABLE = HERE / "expected.tsv"
COLUMNS = [
    *("gpu", "family", "backend", "resolution", "batch", "accumulation", "checkpointing", "precision"),
    *("s_per_step", "peak_gib", "basis", "source", "notes"),
]
BASES = ("warm", "run", "reported")
MAX_RATIO = 4.0
# A quantised base model dequantises on every use: per step it is no faster than bf16 on a card where both run
# (SimpleTuner's checkpointing sweep: int8 and fp8 rows slower than bf16 for SDXL, SD3, Chroma, Lumina2), so its
# figure is a safe upper bound for a bf16 or fp16 run. fp8 *training* (torchao) can be faster: never used for those.
_SLOWER_THAN_HALF = frozenset({"nf4", "int4", "int8"})
# Words nvidia-smi adds to a card's name that do not change which card it is (memory size, form factor).
_VENDOR = {"nvidia", "geforce", "tesla", "quadro"}
_SAME_CARD = re.compile(r"\d+gb|pcie|sxm\d*|hbm\d*e?|nvl")


@dataclass(frozen=True)
class Figure:
    """One row of expected.tsv."""

    gpu: str
    family: str
    backend: str
    width: int
    height: int
    batch: int
    accumulation: int
    checkpointing: bool
    precision: str
    seconds: float
    peak_gib: float | None
    basis: str
    source: str
    notes: str

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def images(self) -> int:
        return self.batch * self.accumulation

    def describe(self) -> str:
        size = f"{self.width}" if self.width == self.height else f"{self.width}x{self.height}"
        accumulation = f" x {self.accumulation} accumulated" if self.accumulation > 1 else ""
        return (
            f"{self.family} at {size} px, batch {self.batch}{accumulation}, "
            f"{self.precision}, gradient checkpointing {'on' if self.checkpointing else 'off'}, {self.backend} on "
            f"{self.gpu} ({self.source})"
        )


@dataclass(frozen=True)
class RunShape:
    """What a run trains, in the terms the table compares."""

    family: str
    backend: str
    resolution: int
    batch: int = 1
    accumulation: int = 1
    checkpointing: bool = True
    precision: str = "bf16"

    @property
    def pixels(self) -> int:
        return self.resolution * self.resolution

    @property
    def images(self) -> int:
        return self.batch * self.accumulation


@dataclass(frozen=True)
class Expected:
    figure: Figure
    seconds: float  # the figure scaled to the run
    scaling: str  # how, in words ("" when the run matches the figure)


def _side(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height or width)


def parse_row(fields: list[str], where: str) -> Figure:
    """A Figure from one TSV line's fields; ValueError naming ``where`` for a malformed row or one without a source."""
    if len(fields) != len(COLUMNS):
        raise ValueError(f"{where}: {len(fields)} fields, expected {len(COLUMNS)} ({' '.join(COLUMNS)})")
    row = dict(zip(COLUMNS, (f.strip() for f in fields), strict=True))
    if not row["source"]:
        raise ValueError(f"{where}: no source (a URL, or 'measured with benchmarks/bench_gpu.py on <card>')")
    if row["basis"] not in BASES:
        raise ValueError(f"{where}: basis {row['basis']!r} is not one of {', '.join(BASES)}")
    if row["checkpointing"] not in ("yes", "no"):
        raise ValueError(f"{where}: checkpointing must be yes or no, not {row['checkpointing']!r}")
    try:
        width, height = _side(row["resolution"])
        figure = Figure(
            gpu=row["gpu"],
            family=row["family"],
            backend=row["backend"],
            width=width,
            height=height,
            batch=int(row["batch"]),
            accumulation=int(row["accumulation"]),
            checkpointing=row["checkpointing"] == "yes",
            precision=row["precision"],
            seconds=float(row["s_per_step"]),
            peak_gib=float(row["peak_gib"]) if row["peak_gib"] else None,
            basis=row["basis"],
            source=row["source"],
            notes=row["notes"],
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if min(figure.width, figure.height, figure.batch, figure.accumulation) < 1 or not figure.seconds > 0:
        raise ValueError(f"{where}: sizes, batch and seconds must be positive")
    return figure


def read_figures(path: Path) -> tuple[Figure, ...]:
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [(i, line) for i, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]
    if not rows or rows[0][1].split("\t") != COLUMNS:
        raise ValueError(f"{path}: the first row must be the header {' '.join(COLUMNS)}")
    return tuple(parse_row(line.split("\t"), f"{path.name}:{i}") for i, line in rows[1:])


@cache
def figures() -> tuple[Figure, ...]:
    """The shipped table."""
    return read_figures(TABLE)


def card_key(name: str, cards: set[str]) -> str | None:
    """Which card of the table ``name`` (as nvidia-smi prints it) is: the longest table name its words start with,
    the rest of its words only memory size or form factor. "NVIDIA H100 80GB HBM3" is H100, "NVIDIA GeForce RTX 3090
    Ti" is RTX 3090 Ti (never RTX 3090), "NVIDIA L40S" is never L4, a laptop card or an unknown one is None."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and w not in _VENDOR]
    best: str | None = None
    for card in cards:
        key = [w for w in re.split(r"[^a-z0-9]+", card.lower()) if w]
        same = words[: len(key)] == key and all(_SAME_CARD.fullmatch(w) for w in words[len(key) :])
        if same and (best is None or len(card) > len(best)):
            best = card
    return best


def _usable(figure: Figure, run: RunShape) -> bool:
    if run.precision == "fp32":
        precision_ok = figure.precision == "fp32"
    else:
        precision_ok = figure.precision in ("bf16", "fp16") or figure.precision in _SLOWER_THAN_HALF
    pixels, images = run.pixels / figure.pixels, run.images / figure.images
    return (
        precision_ok
        and (figure.checkpointing or not run.checkpointing)  # without it a step is faster: never a bound for one with
        and 1 / MAX_RATIO <= pixels <= MAX_RATIO
        and 1 / MAX_RATIO <= images <= MAX_RATIO
    )


def scale(figure: Figure, run: RunShape) -> Expected:
    pixels, images = run.pixels / figure.pixels, run.images / figure.images
    factor = (pixels if pixels >= 1 else math.sqrt(pixels)) * max(images, 1.0)
    words = []
    if pixels != 1:
        rule = "linearly" if pixels > 1 else "by the square root"
        words.append(f"{run.resolution} px against {figure.width}x{figure.height}: scaled {rule}")
    if images > 1:
        words.append(f"{run.images} images per step against {figure.images}: scaled linearly")
    elif images < 1:
        words.append(f"{run.images} images per step against {figure.images}: not scaled down")
    return Expected(figure, figure.seconds * factor, "; ".join(words))


def expected_for(gpu_name: str, run: RunShape, table: tuple[Figure, ...] | None = None) -> Expected | None:
    """The closest comparable figure for a run on ``gpu_name``, scaled to it; None where nothing is close enough."""
    table = figures() if table is None else table
    card = card_key(gpu_name, {f.gpu for f in table})
    candidates = [f for f in table if f.gpu == card and f.family == run.family and _usable(f, run)]
    if not candidates:
        return None

    def distance(f: Figure) -> tuple[bool, bool, bool, bool, float]:
        return (
            f.backend != run.backend,  # the same trainer first
            f.precision != run.precision and not (f.precision in ("bf16", "fp16") and run.precision != "fp32"),
            f.checkpointing != run.checkpointing,
            f.basis != "warm",  # a post-warm-up figure over a whole-run average
            abs(math.log(run.pixels / f.pixels)) + abs(math.log(run.images / f.images)),
        )

    return scale(min(candidates, key=distance), run)
