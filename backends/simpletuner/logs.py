"""SimpleTuner's output (and its webhooks) -> events, for a live run and for a saved log alike.

What the output looks like (SimpleTuner 4.10.1; real logs in ../shared/fixtures/logs/simpletuner):
- stderr: tqdm bars (``Epoch 1/2, Steps:  25%|...| 1/4 [00:11<00:34, 11.53s/it, lr=0.0001, step_loss=1.04]``)
  redrawn with ``\\r`` and ``\\x1b[A``; each step is drawn first with the previous step's ``step_loss`` and then with
  its own (:class:`orchestrator.stepdraws.StepDraws` keeps the second); tracebacks; torch's warnings.
- stdout: ``[RANK 0] ... [INFO] ...`` lines in ANSI colours; checkpoints end with "Random states saved in
  .../checkpoint-N/..." (the last piece of state). The final LoRA's save prints "Model weights saved in
  .../output/..." for SDXL only (SD3, Chroma, Lumina 2, Qwen-Image and FLUX.2 print nothing for it); every family
  logs the dataset overview of its model card (``[INFO] [RANK 0] - Repeats: 0``, then more ``- ...`` lines) inside
  the final save (between the webhooks' ``model_save`` running and completed), so either line starts "saving".
- several processes: other ranks' tracebacks carry a ``[rankN]:`` prefix; only rank 0 draws the bar.
- a saved log may also hold structured lines: webhook captures (``{"body": "<payload>"}``), raw payloads, and
  ``training_metrics.jsonl`` lines (``report_to: simpletuner``).

From the first accepted webhook payload on, progress, phases and checkpoints come from the payloads (exact losses,
not the bar's two decimals) and the output is only watched for failures. Events are the same however the bytes
are chunked: lines are cut at ``\\r`` and ``\\n`` after incremental UTF-8 decoding, and nothing depends on where
a chunk ends.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections import deque
from dataclasses import replace
from typing import Any

from backends.simpletuner.webhooks import MAX_STEP, BadPayload, translate
from orchestrator.distributed import RankWatch, split_rank, with_rank
from orchestrator.events import PHASES, Checkpoint, Event, Failure, Log, Phase, Progress, progress
from orchestrator.failures import WORDS, TracebackWatch, describe
from orchestrator.loglines import Lines
from orchestrator.stepdraws import StepDraws

LABEL = "SimpleTuner"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]")
_LINES = re.compile(r"[\r\n]")
MAX_LINE = 1 << 20  # characters of one line that are read; the rest of a longer line is skipped
_BAR = re.compile(
    r"(?:Epoch (?P<epoch>\d+)/(?P<epochs>\d+),? )?Steps:\s*\d+%\|[^|]*\|\s*(?P<step>\d+)/(?P<total>\d+) "
    r"\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:?]+),\s*(?P<rate>[\d.]+|\?)(?P<unit>s/it|it/s)(?P<postfix>[^\]]*)\]",
    re.ASCII,  # tqdm's digits and blanks: a draw reads the same in a chunk of draws (_DRAWS) and line by line
)
# A segment that is nothing but a draw of the bar (ANSI codes, _BAR, blanks), the most of a log's bytes: with no ESC
# inside the bar, its groups are those _line's _BAR.search would find once the codes are stripped.
_DRAW = re.compile(
    rf"(?:{_ANSI.pattern})*" + _BAR.pattern.replace("[^|]", r"[^|\x1b]").replace(r"[^\]]", r"[^\]\x1b]") + r"\s*",
    re.ASCII,
)
# A chunk whose lines are each nothing but a draw once the ANSI codes are stripped (most of a bar-heavy log's bytes)
# is read in one findall: a match starts each line, and there are as many matches as lines.
_DRAWS = re.compile(
    r"(?<![^\r\n])"
    + _BAR.pattern.replace("[^|]", r"[^|\r\n]").replace(r"[^\]]", r"[^\]\r\n]").replace(r"\s", r"[^\S\r\n]")
    + r"[^\S\r\n]*[\r\n]",
    re.ASCII,
)
_LOSS = re.compile(r"step_loss=([^,\s\]]+)")
_LR = re.compile(r"\blr=([^,\s\]]+)")
# A checkpoint is complete when its random states, the last piece of training state, are saved (launched through
# accelerate, "Model weights saved" comes last instead); weights saved outside checkpoint-N are the final LoRA.
_SAVED = re.compile(r"(?:Model weights|Random states) saved in (?P<path>\S+)")
_CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")
_FINAL_SAVE = re.compile(r"\[INFO\] (?:\[RANK \d+\] )?- Repeats: \d+$")  # the model card's dataset overview
_CACHING = ("Generating aspect bucket cache", "Processing prompts", "Loading captions", "Caching")
_MODEL_NOT_FOUND = re.compile(r"it looks like (\S+) is not the path to a directory")
_TRAINING = PHASES.index("training")
# A line (ANSI codes stripped) that holds none of these words (all that _line and _plain look for, and the
# TracebackWatch's WORDS) only joins the log's tail: most of a real log's lines. The words that only say "loading" or
# "caching" count until the caching phase is reached; after it, _ordered would drop the phase they say.
_WATCHED = ("Steps:", "{", "[rank", "Root Cause", "saved in ", "- Repeats: ", "[ERROR]", *WORDS)
_NOTABLE_EARLY = re.compile("|".join(map(re.escape, (*_WATCHED, *_CACHING, "[INFO] Loading ", "Loading weights"))))
_NOTABLE = re.compile("|".join(map(re.escape, _WATCHED)))
_CACHING_PHASE = PHASES.index("caching")


class SimpleTunerLogParser:
    """One run's output bytes (``feed``) and webhook payloads (``payload``) -> events. See the module docstring."""

    def __init__(self) -> None:
        self.live = False  # a webhook payload was accepted: progress now comes from the payloads
        self.accepted = 0
        self.rejected = 0  # payloads dropped for a field of the wrong type
        self.watch = TracebackWatch()
        self.ranks = RankWatch()  # several processes: which rank failed first
        self.tail: deque[str] = deque(maxlen=40)  # the log's last lines as the user should see them (rank prefixes)
        self._draws: StepDraws[tuple[Any, ...]] = StepDraws()  # the bar's draws, one reading per step
        self._drawn: int | None = None  # the step the bar last showed
        self._decoders: dict[str, Any] = {}
        self._buffers: dict[str, str] = {}
        self._skipping: set[str] = set()  # streams inside a line longer than MAX_LINE: skip to its end
        self._phase = -1  # index into PHASES of the last phase emitted
        self._step = 0  # the last step a Progress was emitted for
        self._checkpoints: set[str] = set()
        self._saved_final = False  # the final save was logged before the steps were read (a replayed log)

    # --- the two inputs ---------------------------------------------------------------------------------------

    def feed(self, data: bytes, stream: str) -> list[Event]:
        decoder = self._decoders.get(stream)
        if decoder is None:
            decoder = self._decoders[stream] = codecs.getincrementaldecoder("utf-8")("replace")
        text = decoder.decode(data)
        if stream in self._skipping:
            end = _LINES.search(text)
            if end is None:
                return []
            self._skipping.discard(stream)
            text = text[end.start() :]
        joined = self._buffers.get(stream, "") + text
        cut = max(joined.rfind("\n"), joined.rfind("\r"))
        rest = joined[cut + 1 :]
        if len(rest) > MAX_LINE:  # never hold more than one capped line, whatever the trainer prints
            rest = rest[:MAX_LINE]
            self._skipping.add(stream)
        self._buffers[stream] = rest
        complete = joined[: cut + 1]
        if len(complete) > MAX_LINE:  # a line may be longer than MAX_LINE: each is read as cut there
            events: list[Event] = []
            for segment in _LINES.split(complete)[:-1]:
                events += self._segment(segment[:MAX_LINE])
            return events
        # ANSI codes never cross a line's end: stripped here at once, not line by line
        lines = Lines(_ANSI.sub("", complete) if "\x1b" in complete else complete)
        if (draws := _all_draws(lines)) is not None:
            return self._bars(draws)
        events = []
        index, count = 0, len(lines)
        while index < count:
            if self.ranks.root_pending:  # the launcher's Root Cause block: each line names its rank
                notable = index
            else:  # the lines before the next notable one only join the log's tail
                notable = lines.next_match(index, _NOTABLE if self._phase >= _CACHING_PHASE else _NOTABLE_EARLY)
                if notable > index:
                    self.tail.extend(self.watch.plain_lines(lines.lines[index:notable]))
            if notable < count and lines.lines[notable]:
                events += self._segment(lines.lines[notable])
            index = notable + 1
        return events

    def _segment(self, segment: str) -> list[Event]:
        # a draw straight to _bar (unless a save is named in its postfix: _line reads that)
        if "Steps:" in segment and (draw := _DRAW.fullmatch(segment)) and "saved in " not in draw["postfix"]:
            return self._bar(draw)
        return self._line(segment) if segment else []

    def payload(self, message: dict[str, Any]) -> list[Event]:
        try:
            events = translate(message)
        except BadPayload:
            self.rejected += 1
            return []
        self.accepted += 1
        self.live = True
        return self._ordered(events)

    def finish(self, returncode: int | None) -> list[Event]:
        events: list[Event] = []
        for stream, decoder in self._decoders.items():
            tail = decoder.decode(b"", final=True)
            rest = self._buffers.get(stream, "") + ("" if stream in self._skipping else tail)
            self._buffers[stream] = ""
            for segment in _LINES.split(rest):
                if segment:
                    events += self._line(segment[:MAX_LINE])
        if not self.live:
            events += self._ordered([p for p in map(_reading, self._draws.flush()) if p is not None])
        failed = self.watch.uncaught if returncode is None else returncode != 0
        if self._saved_final and not failed:
            events += self._ordered([Phase("saving")])
        if failed:
            events.append(self.failure(returncode))
        return events

    # --- the output, line by line -----------------------------------------------------------------------------

    def _line(self, raw: str) -> list[Event]:
        line = (_ANSI.sub("", raw) if "\x1b" in raw else raw).rstrip()
        rank = None
        if line.startswith("[rank"):
            rank, line = split_rank(line)
        if not line or line.isspace():
            return []
        if rank:  # another process: its errors count, never its output
            self.ranks.see(rank, line)
            self.watch.line(line)
            self.tail.append(f"[rank{rank}]: {line}"[:400])
            return []
        if "Steps:" in line and (bar := _BAR.search(line)) is not None:
            events = self._bar(bar)
        elif line[0] == "{" and (structured := self._structured(line)) is not None:
            return structured
        else:
            if rank is not None or self.ranks.root_pending or "Root Cause" in line:
                self.ranks.see(rank, line)  # rank 0's errors, the launcher's verdict on which rank failed
            self.watch.line(line)
            self.tail.append(line[:400])
            events = [] if self.live else self._plain(line)
        if not self.live and "saved in " in line and (saved := _SAVED.search(line)) is not None:
            events += self._saved(saved.group("path"))
        elif not self.live and "- Repeats: " in line and _FINAL_SAVE.search(line):
            events += self._final_save()
        return events

    def _plain(self, line: str) -> list[Event]:
        if line.startswith(_CACHING) and self._drawn is None:  # caption reloads at checkpoints are not a phase
            return self._ordered([Phase("caching")])
        if "[INFO] Loading " in line or line.startswith("Loading weights"):
            return self._ordered([Phase("loading")])
        if "[ERROR]" in line:
            return [Log("error", line.split("[ERROR]", 1)[1].strip())]
        return []

    def _bar(self, bar: re.Match[str]) -> list[Event]:
        return self._bars([bar.groups()])

    def _bars(self, draws: list[tuple[Any, ...]]) -> list[Event]:
        """Consecutive draws of the bar (_BAR's groups: epoch, epochs, step, total, elapsed, remaining, rate, unit,
        postfix): the events they make, in one pass."""
        drawn, moved = self._drawn, False
        readings = []
        for draw in draws:
            step = int(draw[2])
            if step != drawn:
                moved = moved or drawn is None or step > drawn
                drawn = step
            # A draw without a loss is the bar opening (a resumed one at the saved step) or update(1) before the
            # first set_postfix: no step's reading.
            if step and "step_loss=" in draw[8]:
                readings.append((step, draw))
        self._drawn = drawn
        if moved:
            self.watch.progress()  # a new step was drawn: whatever traceback came before did not end the run
        if self.live or not readings:
            return []
        # Draws are read lazily: only those StepDraws reports become events, and _ordered drops a step already
        # reported (most draws of a replayed log): no need to read it
        due = self._draws.draw_all(readings)
        if self._phase >= _TRAINING:
            due = [draw for draw in due if int(draw[2]) > self._step]
        reported = [p for p in map(_reading, due) if p is not None]
        return self._ordered([Phase("training"), *reported]) if reported else []

    def _structured(self, line: str) -> list[Event] | None:
        """A webhook capture line, a raw payload or a training_metrics.jsonl line; None when the line is none."""
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if not isinstance(record, dict):
            return None
        if isinstance(record.get("body"), str):
            try:
                record = json.loads(record["body"])
            except (ValueError, RecursionError):
                return None
            if not isinstance(record, dict):
                return None
        if "type" in record and "job_id" in record:
            return self.payload(record)
        metrics, step = record.get("metrics"), record.get("step")
        if not isinstance(metrics, dict) or not isinstance(step, int) or isinstance(step, bool):
            return None
        loss = metrics.get("train_loss")  # system metrics (cpu, memory) share the file, without a loss
        if self.live or not isinstance(loss, (int, float)) or not 0 < step <= MAX_STEP:
            return []
        seconds, epoch, lr = metrics.get("seconds_per_step"), metrics.get("epoch"), metrics.get("learning_rate")
        progress = Progress(
            step=step,
            epoch=int(epoch) if isinstance(epoch, (int, float)) and math.isfinite(epoch) else None,
            loss=_float(loss),
            lr=_float(lr) if isinstance(lr, (int, float)) else None,
            it_per_s=1.0 / seconds if isinstance(seconds, (int, float)) and seconds > 0 else None,
        )
        return self._ordered([Phase("training"), progress])

    def _saved(self, path: str) -> list[Event]:
        folder = path.rsplit("/", 1)[0]
        match = _CHECKPOINT_DIR.fullmatch(folder.rsplit("/", 1)[-1])
        if match is None:
            return self._final_save()
        return self._ordered([Checkpoint(folder, int(match.group(1)))])

    def _final_save(self) -> list[Event]:
        """Training is over: the last step's reading, if its bar drew it only once, then "saving". A saved log is
        replayed stdout first: a save line met before any step (the bar is on stderr) says "saving" at the end."""
        if self._phase < PHASES.index("training"):
            self._saved_final = True
            return []
        due = [p for p in map(_reading, self._draws.flush()) if p is not None]
        return self._ordered([*due, Phase("saving")])

    # --- the stream's promises --------------------------------------------------------------------------------

    def _ordered(self, events: list[Event]) -> list[Event]:
        """Phases only forward (never "done": that is the orchestrator's), one Progress per step, with its loss,
        in step order, and each checkpoint once, whichever input they came from."""
        kept: list[Event] = []
        for event in events:
            if isinstance(event, Phase):
                index = PHASES.index(event.name)
                if index <= self._phase or event.name == "done":
                    continue
                self._phase = index
            elif isinstance(event, Progress):
                if event.step <= self._step or event.loss is None:
                    continue
                self._step = event.step
            elif isinstance(event, Checkpoint):
                if event.path in self._checkpoints:
                    continue
                self._checkpoints.add(event.path)
            kept.append(event)
        return kept

    def failure(self, returncode: int | None) -> Failure:
        """Why the run failed: the exception the log names, its kind and hint (orchestrator.failures), and which
        rank failed first when there were several processes."""
        failure = describe(LABEL, "simpletuner", self.watch, returncode)
        failure = replace(failure, log_tail=[line for line in self.tail if line.strip()][-25:])
        for error in self.watch.errors if failure.kind == "model_not_found" else []:
            missing = _MODEL_NOT_FOUND.search(error.text)
            if missing is not None:  # name the folder: SimpleTuner's message blames the hub even for a local path
                message = f"{LABEL} failed: {error.name}: base model not found: {missing.group(1)}"
                failure = replace(failure, message=message[:400])
                break
        return with_rank(failure, self.ranks.failure(), LABEL)


def _reading(draw: tuple[Any, ...]) -> Progress | None:
    """A bar draw (_BAR's groups) as a Progress; None when its loss is not a number (nan, inf)."""
    epoch, epochs, step, total, _, remaining, rate, unit, postfix = draw
    loss_match = _LOSS.search(postfix)
    loss = _float(loss_match.group(1)) if loss_match else None
    if loss is None:
        return None
    lr = _LR.search(postfix)
    speed = float(rate) if rate != "?" else 0.0
    it_per_s = (speed if unit == "it/s" else 1.0 / speed) if speed else None
    return progress(
        int(step),
        int(total),
        int(epoch) if epoch else None,
        int(epochs) if epochs else None,
        loss,
        _float(lr.group(1)) if lr else None,
        it_per_s,
        _clock(remaining) if "?" not in remaining else None,
    )


def _all_draws(lines: Lines) -> list[tuple[str, ...]] | None:
    """_DRAWS' groups for each line, when every line is nothing but a draw of the bar (and none names a save)."""
    if lines.text.count("Steps:") != len(lines) or "saved in " in lines.text:  # cheap: most chunks are not
        return None
    draws = _DRAWS.findall(lines.text)
    return draws if len(draws) == len(lines) else None


def _float(text: str | float) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _clock(clock: str) -> float:
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total
