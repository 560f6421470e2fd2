"""Why a trainer failed, the same way for every backend: the exceptions a log shows, the kind of failure they mean,
and what the user should do about it.

Each backend's parser feeds its output lines to a :class:`TracebackWatch` and, when the run fails, builds its
Failure with :func:`describe`; the kinds and hints live here once (the kind names are
:data:`orchestrator.events.FAILURE_KINDS`).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from orchestrator.events import Failure

# The kinds a log can show, tried in this order (the first pattern found in the log's tail wins). Patterns are
# the trainers' and libraries' own messages, seen in real runs (fixtures/logs) or in their source. A multi-process
# run's failure ("distributed": a timeout, a lost peer) is told by orchestrator.distributed.with_rank, which knows
# the failing rank; torchrun's ChildFailedError follows every such failure, whatever its cause.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("disk_full", re.compile(r"No space left on device|\bENOSPC\b|Disk quota exceeded", re.I)),
    (
        "out_of_memory",
        re.compile(r"out of memory|OutOfMemoryError|DefaultCPUAllocator: can't allocate|Cannot allocate memory", re.I),
    ),
    (
        "model_mismatch",
        re.compile(
            r"Error\(s\) in loading state_dict|size mismatch for |Missing key\(s\) in state_dict|"
            r"Unexpected key\(s\) in state_dict|is not a valid model_family|does not match the model family"
        ),
    ),
    ("not_installed", re.compile(r"ModuleNotFoundError|No module named|^ImportError\b|\bImportError: ", re.M)),
    (
        "model_not_found",
        re.compile(
            r"neither a valid local path nor a valid repo id|is not the path to a directory containing|"
            r"does not appear to have a file named|Repository Not Found|"
            r"No such file or directory.*(?:model|safetensors|\.ckpt)|not found: .*model|"
            r"Can't load .* for '[^']*'\. If you were trying to load it from",
            re.I,
        ),
    ),
    ("bad_argument", re.compile(r"error: unrecognized arguments|error: argument |invalid choice: |unknown option")),
    (
        "network",
        re.compile(
            r"Max retries exceeded|Temporary failure in name resolution|Connection refused|"
            r"offline mode is enabled|We couldn't connect to",
            re.I,
        ),
    ),
)

HINTS: dict[str, str] = {
    "disk_full": "free disk space where the run folder and caches live (or move them: output.dir, LORAFORGE_HOME), "
    "then `loraforge resume RUN`",
    "out_of_memory": "lower training.batch_size or training.resolution, or turn on training.gradient_checkpointing",
    "model_mismatch": "the base model is not the family the job says (or not a model this trainer reads): check "
    "base_model and family",
    "not_installed": "repair the environment: `loraforge setup {backend} --force`",
    "model_not_found": "check base_model: a local .safetensors file, a diffusers folder, or a hub id that is "
    "downloaded (offline) or reachable",
    "distributed": "a process of the run died or a collective timed out; see the failing rank's lines in the log",
    "bad_argument": "check backend_args.{backend} and the job's settings against the trainer's options",
    "network": "the trainer could not reach the hub: download the model first, or set base_model to a local path",
    "interrupted": "`loraforge resume RUN` continues from the last checkpoint",
    "killed": "often the system ran out of RAM; lower resolution or batch size, then `loraforge resume RUN`",
    "other": "see the log tail above and logs/stderr.log",
}

# A line that starts an exception report: "ValueError: text", "torch.OutOfMemoryError: text", "Killed".
_EXCEPTION = re.compile(
    r"^(?P<name>[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Failure)|Killed)(?::\s*(?P<text>.*))?$"
)
# What a line must hold to change the watch's state: the start of a traceback, or a word every _EXCEPTION name
# holds. A parser that finds none of them in a line may hand it to TracebackWatch.plain, which only keeps it.
WORDS = ("Traceback", "Error", "Exception", "Interrupt", "Exit", "Failure", "Killed")
_WRAPPERS = ("subprocess.CalledProcessError", "CalledProcessError", "torch.distributed.elastic.multiprocessing.errors")


@dataclass(frozen=True)
class RaisedError:
    name: str  # "RuntimeError"
    text: str  # its message's first line

    def __str__(self) -> str:
        return f"{self.name}: {self.text}" if self.text else self.name


class TracebackWatch:
    """Reads a trainer's output lines and keeps what a failure report needs: the exceptions raised (each one once,
    in the order first raised, not only those still in the tail: a size-mismatch report can run to hundreds of
    lines), whether the output ends in an uncaught traceback, and the last lines."""

    def __init__(self, tail: int = 40) -> None:
        # as a list, and as a set: a trainer that raises and catches the same error at every step (a 50 MB log of
        # them) keeps one, and the failure report reads each once
        self.errors: list[RaisedError] = []
        self._raised: set[RaisedError] = set()
        self.tail: deque[str] = deque(maxlen=tail)
        self.in_traceback = False  # inside a "Traceback (most recent call last):" block
        self.uncaught = False  # a traceback ended in an exception after the last progress drawn

    def line(self, line: str) -> None:
        """One line of output, without its end-of-line (progress bars excluded by the caller)."""
        text = line.rstrip()
        if not text:
            return
        self.tail.append(text[:400])
        stripped = text.lstrip()
        if stripped.startswith("Traceback (most recent call last)"):
            self.in_traceback = True
            return
        match = _EXCEPTION.match(stripped) if not text.startswith((" ", "\t")) or self.in_traceback else None
        if match is not None:
            error = RaisedError(match.group("name"), (match.group("text") or "").strip()[:300])
            if error not in self._raised:
                self._raised.add(error)
                self.errors.append(error)
            if self.in_traceback:
                self.uncaught = True
            self.in_traceback = False

    def plain(self, line: str) -> None:
        """:meth:`line` for a line that holds none of :data:`WORDS`: it only joins the tail."""
        text = line.rstrip()
        if text:
            self.tail.append(text[:400])

    def plain_lines(self, lines: list[str]) -> list[str]:
        """:meth:`plain` for each of ``lines``, in order; what joined the tail. Only the last lines can stay in
        the tail, so only those are read."""
        if len(lines) <= (self.tail.maxlen or 0):  # most calls: a few lines between two notable ones
            kept = [text[:400] for text in map(str.rstrip, lines) if text]
            self.tail.extend(kept)
            return kept
        kept = []
        for line in reversed(lines):
            text = line.rstrip()
            if text:
                kept.append(text[:400])
                if len(kept) == self.tail.maxlen:
                    break
        kept.reverse()
        self.tail.extend(kept)
        return kept

    def progress(self) -> None:
        """The trainer drew progress: whatever traceback came before it did not end the run."""
        self.uncaught = False
        self.in_traceback = False

    def cause(self) -> RaisedError | None:
        """The exception that ended the run: the first one raised that is not a launcher's report of it."""
        own = [e for e in self.errors if not e.name.startswith(_WRAPPERS)]
        return (own or self.errors or [None])[0]


def classify(text: str) -> str:
    """The kind of failure a log's text shows, "other" when none is recognised."""
    for kind, pattern in _RULES:
        if pattern.search(text):
            return kind
    return "other"


def describe(
    label: str, backend: str, watch: TracebackWatch, returncode: int | None, *, tail_lines: int = 25
) -> Failure:
    """The Failure for a run that ended with ``returncode`` (None: unknown, a replayed log): its kind, a message
    that names the exception, the hint, and the last lines of the log."""
    tail = [line for line in watch.tail if line.strip()][-tail_lines:]
    cause = watch.cause()
    text = "\n".join(watch.tail) + "\n" + "\n".join(str(e) for e in watch.errors)
    kind = classify(text)
    if kind == "other" and cause is None and returncode in (130, 143):
        kind = "interrupted"
    elif kind == "other" and cause is None and returncode in (137, -9):
        kind = "killed"
    elif cause is not None and cause.name == "KeyboardInterrupt":
        kind = "interrupted"
    if cause is not None:
        message = f"{label} failed: {cause}"
    elif kind == "killed":
        message = f"{label} was killed (SIGKILL) before it finished"
    elif kind == "interrupted":
        message = f"{label} was stopped"
    else:
        message = f"{label} exited with code {returncode}" if returncode is not None else f"{label} failed"
    return Failure(kind=kind, message=message[:400], hint=HINTS[kind].format(backend=backend), log_tail=tail)
