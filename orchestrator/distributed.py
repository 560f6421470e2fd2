"""Multi-process (DDP) runs: the launcher's port, which rank a line came from, and which rank failed first.

What the parsers can rely on (accelerate launch -> torchrun, torch 2.13/2.14, checked on CPU with gloo):
- an uncaught exception is printed by every failing rank with its global rank in front of each line
  (``[rank1]: Traceback ...``, ``[rank1]: ValueError: ...``); torch's own watchdog lines look like ``[rank0]:[E...]``;
- ranks that were waiting on the one that died fail next, with a consequence, not a cause ("Connection closed by
  peer" from gloo, an NCCL abort), so the first error printed is not always the one that matters;
- the launcher ends with a ChildFailedError block whose "Root Cause (first observed failure)" names the rank;
- progress bars and plain prints carry no prefix: both backends draw them on the local main process only, so an
  unprefixed line is the main process's and a prefixed line of another rank is never progress.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.events import Failure

RANK_PREFIX = re.compile(r"^\[rank(\d+)\]:\s?")
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Interrupt)|Killed)\b")
# An error that only says another rank went away (gloo / NCCL / the c10d store): a consequence, not the cause.
_CONSEQUENCE = re.compile(
    r"Connection closed by peer|Connection reset by peer|Broken pipe|NCCL communicator was aborted|"
    r"ProcessGroup\w* is aborted|DistNetworkError|recvValue failed|Socket Timeout",
    re.I,
)
_TIMEOUT = re.compile(
    r"Watchdog caught collective operation timeout|Timed out waiting|before timing out|"
    r"(?:NCCL|gloo|collective|barrier)\b.*\btime(?:d)? ?out",
    re.I,
)
_ROOT_CAUSE_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")
_ROOT_CAUSE_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")


def free_port() -> int:
    """A free loopback port for a one-node run's rendezvous. Chosen at render time and written into the accelerate
    config: a fixed default (29500) collides with any other run on the machine, and port 0 hangs accelerate 1.6."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def node_placement(nodes: int) -> tuple[int, str]:
    """This node's machine rank and the main node's address. One node: (0, localhost). Several: what the Slurm job
    script exports on each node (SLURM_NODEID, and MASTER_ADDR = the job's first host), since only the scheduler
    knows which node is which."""
    import os

    from orchestrator.errors import LoraforgeError

    if nodes == 1:
        return 0, "127.0.0.1"
    rank, address = os.environ.get("SLURM_NODEID"), os.environ.get("MASTER_ADDR")
    if rank is None or not address or not rank.isdigit() or int(rank) >= nodes:
        raise LoraforgeError(
            f"distributed.nodes={nodes}: this node's rank and the main node's address are unknown "
            f"(SLURM_NODEID={rank!r}, MASTER_ADDR={address!r})",
            f"start multi-node jobs through Slurm: loraforge submit JOB --nodes {nodes} --gpus-per-node G",
        )
    return int(rank), address


def split_rank(line: str) -> tuple[int | None, str]:
    """(global rank, the line without its prefix); rank is None for a line torch did not prefix."""
    match = RANK_PREFIX.match(line)
    if match is None:
        return None, line
    return int(match.group(1)), line[match.end() :]


@dataclass(frozen=True)
class RankFailure:
    rank: int
    error: str | None  # that rank's exception line, e.g. "ValueError: boom"
    timeout: bool  # a collective timed out somewhere (a rank hung rather than raised)
    exitcode: int | None = None  # from the launcher's verdict; negative: killed by that signal


@dataclass
class RankWatch:
    """Sees every line of every rank (prefix already split off) and names the rank that failed first."""

    errors: dict[int, dict[str, None]] = field(default_factory=dict)  # rank -> its exception lines, each once, in order
    order: list[int] = field(default_factory=list)  # ranks in the order their first error was printed
    timeout_ranks: list[int] = field(default_factory=list)
    root_rank: int | None = None
    root_exitcode: int | None = None
    _in_root_cause: bool = False

    @property
    def root_pending(self) -> bool:
        """Inside the launcher's Root Cause block: its next lines name the rank and its exit code."""
        return self._in_root_cause

    def see(self, rank: int | None, text: str) -> None:
        stripped = text.strip()
        if not stripped:
            return
        if rank is None:  # the launcher's own lines: its Root Cause block names the rank
            if stripped.startswith("Root Cause"):
                self._in_root_cause = True
            elif self._in_root_cause and (match := _ROOT_CAUSE_RANK.match(text)):
                self.root_rank = int(match.group(1))
            elif self._in_root_cause and (match := _ROOT_CAUSE_EXIT.match(text)):
                self.root_exitcode = int(match.group(1))
                self._in_root_cause = False
            return
        # every _TIMEOUT alternative holds "tim" (timeout, Timed, timing): a cheap test first, on every rank line
        if rank not in self.timeout_ranks and "tim" in text.lower() and _TIMEOUT.search(text):
            self.timeout_ranks.append(rank)
        if _EXCEPTION.match(text) and not text.startswith((" ", "\t")):
            if rank not in self.errors:
                self.errors[rank] = {}
                self.order.append(rank)
            self.errors[rank][stripped] = None  # each error once, in the order first raised

    def failure(self) -> RankFailure | None:
        """The failing rank and its error; None when no rank-prefixed error or launcher verdict was seen."""
        causes = [r for r in self.order if any(not _CONSEQUENCE.search(e) for e in self.errors[r])]
        # the launcher's verdict first: a rank killed by the system prints nothing, its peers print consequences
        rank = (
            self.root_rank if self.root_rank is not None else (causes or self.order or self.timeout_ranks or [None])[0]
        )
        if rank is None:
            return None
        lines = list(self.errors.get(rank, {}))
        own = [e for e in lines if not _CONSEQUENCE.search(e)]
        error = (own or lines or [None])[0]
        exitcode = self.root_exitcode if rank == self.root_rank else None
        return RankFailure(rank=rank, error=error, timeout=bool(self.timeout_ranks), exitcode=exitcode)


def with_rank(failure: Failure, ranked: RankFailure | None, trainer: str) -> Failure:
    """The backend's Failure, saying which rank failed and with what; a timeout or a lost peer gets its own kind."""
    if ranked is None:
        return failure
    what = ranked.error or failure.message
    message = f"{trainer} failed on rank {ranked.rank}: {what}"
    if failure.kind not in ("other", "killed"):
        return replace(failure, message=message[:300])
    if ranked.timeout:
        return replace(
            failure,
            kind="distributed",
            message=message[:300],
            hint="a process stopped answering and the others timed out waiting; see that rank's lines in the log, "
            "or raise distributed.ddp_timeout_minutes if a long step (caching, saving) is expected",
        )
    if ranked.error is None and ranked.exitcode is not None and ranked.exitcode < 0:
        return replace(
            failure,
            kind="killed",
            message=f"{trainer}: rank {ranked.rank} was killed by signal {-ranked.exitcode}"[:300],
            hint="often the system ran out of RAM (every process holds its own copy of the model); use fewer "
            "processes (--gpus) or a smaller batch or resolution",
        )
    if ranked.error is None or _CONSEQUENCE.search(ranked.error):
        return replace(
            failure,
            kind="distributed",
            message=message[:300],
            hint="a process of the run died (often out of memory, killed by the system); see the log",
        )
    return replace(failure, message=message[:300])
