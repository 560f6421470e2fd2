"""sd-scripts' output as loraforge events: incremental, from either stream, in any chunking.

What sd-scripts writes (``accelerate launch`` of train_network.py and its siblings):
- stdout: print() lines: the summary block ("total optimization steps / ...: N"), "epoch k/K", "saving checkpoint:
  PATH", "skipping N steps" on resume;
- stderr: rich logging (wrapped at 80 columns) and the tqdm bar "steps: 25%|..| 1/4 [.., 6.44s/it, avr_loss=1.09]",
  separated by \\r, each step drawn twice (timing first, with the previous step's avr_loss, then its own);
  validation passes draw their own "validation steps:" bar;
- other tqdm bars on stderr: "read caption:", and unlabeled ones (" 25%|..| 1/4 [..]") after "caching latents..." and
  "caching Text Encoder outputs..." (SD3, Flux, Chroma, Lumina 2: minutes on CPU); caching is a phase, not progress,
  and no bar line is kept for a failure's tail;
- text glued to a bar with no line break: a warning printed at each save ("...avr_loss=2.93]/.../lora_sd3.py:530:
  FutureWarning: ..."), or a log line ("...[00:00<?, ?it/s]2026-12-07 09:17:30 INFO epoch is incremented."): read
  as a line of its own;
- failures: a Python traceback, then accelerate's CalledProcessError traceback; exit status 1. Several processes
  prefix each line of a rank's traceback with "[rankN]: " (see orchestrator.distributed).

One Progress per step with that step's own loss (orchestrator.stepdraws), phases only forward, and a Failure that
names the exception (orchestrator.failures), even after hundreds of lines of a state-dict size-mismatch report.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from orchestrator.distributed import RankWatch, split_rank, with_rank
from orchestrator.events import PHASES, Checkpoint, Event, Failure, Log, Phase, Progress, Validation, progress
from orchestrator.failures import WORDS, TracebackWatch, describe
from orchestrator.loglines import Lines
from orchestrator.stepdraws import StepDraws

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR = re.compile(
    r"steps:\s+\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[(?P<elapsed>[\d:]+)<(?P<eta>[\d:?]+),\s*"
    r"(?P<rate>[\d.]+|\?)(?P<unit>s/it|it/s)(?:,\s*avr_loss=(?P<loss>[\d.eE+-]+|nan))?",
    re.ASCII,  # tqdm's digits and blanks: the same draws match the bytes (bulk) and the text (line by line)
)
# sd-scripts' validation bars ("validation steps" every N steps, "epoch validation steps" at each epoch's end) carry
# the running mean of the held-out loss; the last draw (n == total) holds the measurement.
VAL_BAR = re.compile(
    r"validation steps:\s+\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[.*?val_(?:epoch_)?avg_loss=(?P<loss>[\d.eE+-]+|nan)"
)
# any other tqdm bar: an optional label, the percentage and the bar ("read caption: 100%|", " 25%|")
OTHER_BAR = re.compile(r"\s*(?:[^|:]{1,40}:\s*)?\d{1,3}%\|")
TOTAL = re.compile(r"total optimization steps[^:]*:\s*(\d+)")
EPOCH = re.compile(r"^epoch (\d+)/(\d+)")
SAVED = re.compile(r"saving checkpoint: (.+\.safetensors)")
SKIP = re.compile(r"skipping (\d+) steps")
STEP_FILE = re.compile(r"-step(\d+)\.safetensors$")  # save_every_n_steps: NAME-step00000004.safetensors
EPOCH_FILE = re.compile(r"-\d{6}\.safetensors$")  # save_every_n_epochs: NAME-000001.safetensors

# A segment that is nothing but a draw of the training bar (BAR up to its "]"): whitespace and the bar's cells stop at
# the segment's end, so the groups are those BAR.match finds in the segment.
_DRAW_PATTERN = BAR.pattern.replace(r"\s", r"[^\S\r\n]").replace("[^|]", r"[^|\r\n]") + r"[^\]\r\n]*\]"
DRAW = re.compile(_DRAW_PATTERN, re.ASCII)
# The hot path, on the bytes as read: a chunk whose segments are each nothing but a draw, read in one findall (a match
# starts each segment, and there are as many matches as segments).
DRAWS = re.compile(rb"(?<![^\r\n])" + _DRAW_PATTERN.encode() + rb"[\r\n]")

# A line that holds none of these words (all that _segment and _line look for but the phase words "loading" and
# "caching", and the TracebackWatch's WORDS) means nothing but a line of the log's tail: most of a real log's lines.
NOTABLE = re.compile(
    "|".join(
        map(
            re.escape,
            ("steps", "%|", "\x1b", "[rank", "Root Cause", "skipping", "epoch ", "saving checkpoint:", *WORDS),
        )
    )
)

LOADING, CACHING, TRAINING, SAVING = (PHASES.index(name) for name in ("loading", "caching", "training", "saving"))

# One draw of the bar as read, text until it is reported: its step, DRAW's groups (str, or bytes from the bulk
# path: n, total, elapsed, eta, rate, unit, avr_loss) and what the log said before it (the summary's total, the
# resume offset, epoch, epochs).
Draw = tuple[int, tuple[Any, ...], tuple[int | None, int, int | None, int | None]]


@cache  # a log repeats few distinct clocks
def _seconds(clock: str | bytes) -> float | None:
    if isinstance(clock, bytes):
        clock = clock.decode()
    if "?" in clock:
        return None
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return float(seconds)


def _all_draws(chunk: bytes) -> list[tuple[bytes, ...]] | None:
    """DRAWS' groups for each segment, when every segment of ``chunk`` is a draw of the training bar."""
    segments = chunk.count(b"\r") + chunk.count(b"\n")
    if chunk.count(b"steps:") != segments:  # cheap: most chunks of a real log are not all draws
        return None
    draws = DRAWS.findall(chunk)
    return draws if len(draws) == segments else None


def _glued(segment: str, start: int) -> str | None:
    """The text after a bar's closing "]" (from ``start``, inside the bar), when something was printed onto it."""
    end = segment.find("]", start)
    return segment[end + 1 :] if 0 <= end < len(segment) - 1 else None


@cache  # tqdm prints the rate with 3 significant digits: a log repeats few distinct ones
def _it_per_s(rate: str | bytes, unit: str | bytes) -> float | None:
    if rate == "?" or rate == b"?":
        return None
    value = float(rate)  # float() reads bytes as it reads text: a draw from the bulk path is not decoded
    return value if unit == "it/s" or unit == b"it/s" else (1 / value if value else None)


def _progress(draw: Draw) -> Progress:
    step, (_, total, _, eta, rate, unit, loss), (known_total, offset, epoch, epochs) = draw
    total = known_total or offset + int(total)
    return progress(
        step, total, epoch, epochs, float(loss) if loss else None, None, _it_per_s(rate, unit), _seconds(eta)
    )


class KohyaLogParser:
    """A segment ends at \\n or \\r; each stream keeps its unfinished segment until the next bytes or the end."""

    def __init__(self) -> None:
        self.partial = {"stdout": b"", "stderr": b""}
        self.total: int | None = None  # from the summary block; the bar's own total restarts on resume
        self.offset = 0  # steps skipped on resume: the bar restarts at 0 but the run does not
        self.epoch: int | None = None
        self.epochs: int | None = None
        self.phase = -1  # index in PHASES of the last phase sent
        self.last_step = 0  # the step the bar shows now (validation passes measure at it)
        self.draws: StepDraws[Draw] = StepDraws()
        self.watch = TracebackWatch()  # every line but the bars: the exceptions raised and the log's tail
        self.ranks = RankWatch()  # several processes: which rank failed first
        self.validated: set[int] = set()  # steps that already have a Validation event
        self.val_pending: Validation | None = None  # the newest complete validation draw, sent when the bar is done

    def feed(self, data: bytes, stream: str) -> list[Event]:
        buffer = self.partial[stream] + data
        cut = max(buffer.rfind(b"\n"), buffer.rfind(b"\r"))
        if cut < 0:
            self.partial[stream] = buffer
            return []
        self.partial[stream] = buffer[cut + 1 :]
        chunk = buffer[: cut + 1]
        if not self._pending() and (draws := _all_draws(chunk)):
            return self._draws(draws)  # nothing but the training bar's draws (most of a bar-heavy log's bytes)
        # one decode per chunk, not per line; a cut at \r or \n never splits a UTF-8 character
        lines = Lines(chunk.decode("utf-8", "replace"))
        events: list[Event] = []
        index, count = 0, len(lines)
        while index < count:
            if self._pending():  # a pending line must see each line after it, whatever it holds
                notable = index
            else:  # the lines before the next notable one (most of a real log) only join the log's tail
                notable = lines.next_match(index, NOTABLE)
                if notable > index:
                    self._plain(lines.lines[index:notable], events)
            if notable < count and lines.lines[notable]:
                events += self._one(lines.lines[notable])
            index = notable + 1
        return events

    def _plain(self, lines: list[str], events: list[Event]) -> None:
        """Lines that hold no notable word: to the tail at once, unless one can still move the phase before
        training starts (sd-scripts' "loading ...", "caching latents"): then one at a time."""
        if self.phase < CACHING:
            lower = "\n".join(lines).lower()
            if "caching" in lower or (self.phase < LOADING and "loading" in lower):
                for line in lines:
                    if line:
                        events += self._one(line)
                return
        self.watch.plain_lines(lines)

    def _one(self, segment: str) -> list[Event]:
        if not segment.startswith("steps:"):
            return self._segment(segment)
        draw = DRAW.fullmatch(segment)  # nothing but a draw of the bar: straight to _draw, unless a line waits
        if draw is not None and not self._pending():
            return self._bar(draw)
        return self._draw_or_segment(segment)  # a bar with text glued to it, or a draw a pending line sees

    def payload(self, message: dict[str, Any]) -> list[Event]:
        return []  # sd-scripts posts no webhooks

    def finish(self, returncode: int | None) -> list[Event]:
        events: list[Event] = []
        for stream in ("stdout", "stderr"):
            if self.partial[stream]:
                events += self._segment(self.partial[stream].decode("utf-8", "replace"))
                self.partial[stream] = b""
        if self.val_pending is not None:
            events.append(self._flush_validation())
        events += [_progress(draw) for draw in self.draws.flush()]
        failed = self.watch.uncaught if returncode is None else returncode != 0
        if failed:
            events.append(self.failure(returncode))
        return events

    def failure(self, returncode: int | None) -> Failure:
        failure = describe("sd-scripts", "kohya", self.watch, returncode)
        return with_rank(failure, self.ranks.failure(), "sd-scripts")

    # --- lines ------------------------------------------------------------------------------------------------------

    def _pending(self) -> bool:
        """A validation pass waits for the line that ends it, or the launcher's Root Cause block for its rank."""
        return self.val_pending is not None or self.ranks.root_pending

    def _draw_or_segment(self, segment: str) -> list[Event]:
        # the bar: straight to _bar when nothing is pending that must see the line first
        if segment.startswith("steps:") and not self._pending():
            match = BAR.match(segment)
            if match is not None:
                events = self._bar(match)
                if (rest := _glued(segment, match.end())) is not None:
                    events += self._segment(rest)
                return events
        return self._segment(segment)

    def _advance(self, phase: int) -> list[Event]:
        if phase <= self.phase:
            return []
        self.phase = phase
        return [Phase(PHASES[phase])]

    def _segment(self, raw: str) -> list[Event]:
        line = ANSI.sub("", raw) if "\x1b" in raw else raw
        if line.startswith("[rank"):  # torch prefixes a rank's traceback: its errors count, only rank 0's output
            rank, line = split_rank(line)
            self.ranks.see(rank, line)
            if rank:
                self.watch.line(f"[rank{rank}]: {line}")  # in the tail, marked: the user sees whose lines they are
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
        if "steps:" in line and (match := BAR.search(line)):
            events = self._bar(match)
            rest = _glued(line, match.end())
            return events if rest is None else events + self._line(rest)
        stripped = line.strip()
        if not stripped:
            return []
        if "%|" in line and (match := OTHER_BAR.match(line)):
            self.watch.progress()  # the trainer goes on: a traceback before this bar did not end the run
            rest = _glued(line, match.end())
            return [] if rest is None else self._line(rest)
        self.watch.line(line)
        # substring tests before regexes: most lines match nothing
        if "optimization steps" in line and (match := TOTAL.search(line)):
            self.total = int(match.group(1))
            return self._advance(TRAINING)
        if "skipping" in line and (match := SKIP.search(line)):
            self.offset = int(match.group(1))
            return [Log("info", f"resumed: skipping {self.offset} steps already trained")]
        if stripped.startswith("epoch ") and (match := EPOCH.match(stripped)):
            self.epoch, self.epochs = int(match.group(1)), int(match.group(2))
            return []
        if "saving checkpoint:" in line and (match := SAVED.search(line)):
            return self._saved(match.group(1).strip())
        if self.phase >= TRAINING:
            return []
        lower = line.lower()
        if "caching latents" in lower or "caching text encoder outputs" in lower:
            return self._advance(CACHING)
        if "loading" in lower:
            return self._advance(LOADING)
        return []

    def _saved(self, path: str) -> list[Event]:
        step = STEP_FILE.search(path)
        if step is not None:
            return [Checkpoint(path, int(step.group(1)))]
        if EPOCH_FILE.search(path):  # an epoch's checkpoint: saved after that epoch's last step
            return [Checkpoint(path, self.last_step or None)]
        return self._advance(SAVING)  # the final LoRA

    def _bar(self, match: re.Match[str]) -> list[Event]:
        return self._draws([match.groups()])

    def _draws(self, rows: list[tuple[Any, ...]]) -> list[Event]:
        """Consecutive draws of the training bar (DRAW's groups): the events they make, in one pass."""
        context = (self.total, self.offset, self.epoch, self.epochs)
        offset = self.offset
        draws = [
            (step, (step, row, context))
            for row in rows
            if (step := offset + int(row[0])) != offset  # the bar's opening draw (0/N) is no step
        ]
        if not draws:
            return []
        self.last_step = draws[-1][0]
        self.watch.progress()
        # stdout's "saving checkpoint" line for the final LoRA can overtake the last step's second draw on stderr:
        # that late draw still carries the final loss, but training is not starting again
        events: list[Event] = self._advance(TRAINING) if self.phase < TRAINING else []
        events += [_progress(draw) for draw in self.draws.draw_all(draws)]
        return events

    # --- validation -------------------------------------------------------------------------------------------------

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
