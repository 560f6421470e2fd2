"""The log parsers' bulk helpers do exactly what one line or one draw at a time does: StepDraws.draw_all,
TracebackWatch.plain_lines and Lines.next_match; and an error a log repeats is reported as if raised once."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.distributed import RankWatch
from orchestrator.failures import TracebackWatch, describe
from orchestrator.loglines import Lines
from orchestrator.stepdraws import StepDraws


@given(st.lists(st.lists(st.integers(1, 6), max_size=12), max_size=4))
def test_draw_all_is_draw_for_each(batches: list[list[int]]) -> None:
    one, bulk = StepDraws[tuple[int, int]](), StepDraws[tuple[int, int]]()
    for batch in batches:
        draws = [(step, (step, i)) for i, step in enumerate(batch)]
        assert bulk.draw_all(draws) == [due for step, reading in draws for due in one.draw(step, reading)]
    assert bulk.flush() == one.flush()


@given(st.lists(st.lists(st.sampled_from(["", "  ", "a line", "x" * 450, "tail \t"]), max_size=60), max_size=4))
def test_plain_lines_is_plain_for_each(batches: list[list[str]]) -> None:
    one, bulk = TracebackWatch(tail=8), TracebackWatch(tail=8)
    for batch in batches:
        for line in batch:
            one.plain(line)
        bulk.plain_lines(batch)
        assert list(bulk.tail) == list(one.tail)


@given(
    st.lists(st.sampled_from(["", "plain", "an Error here", "x Error", "tail  "]), min_size=1, max_size=30), st.data()
)
def test_next_match_is_the_first_line_that_matches(lines: list[str], data: st.DataObject) -> None:
    ends = data.draw(st.lists(st.sampled_from(["\r", "\n"]), min_size=len(lines), max_size=len(lines)))
    chunk = Lines("".join(line + end for line, end in zip(lines, ends, strict=True)))
    assert chunk.lines == lines
    pattern = re.compile("Error")
    for start in range(len(lines) + 1):
        expected = next((i for i in range(start, len(lines)) if "Error" in lines[i]), len(lines))
        assert chunk.next_match(start, pattern) == expected


REPEATED_FAILURE = [
    "Traceback (most recent call last):",
    '  File "train_network.py", line 28, in <module>',
    "    from torchvision import transforms",
    "ModuleNotFoundError: No module named 'torchvision'",
    "Traceback (most recent call last):",
    "    raise subprocess.CalledProcessError(returncode=process.returncode, cmd=cmd)",
    "subprocess.CalledProcessError: Command '['python', 'train_network.py']' returned non-zero exit status 1.",
]


def test_an_error_raised_again_and_again_is_kept_once_and_reported_the_same() -> None:
    once, often = TracebackWatch(), TracebackWatch()
    for line in REPEATED_FAILURE:
        once.line(line)
    for _ in range(500):
        for line in REPEATED_FAILURE:
            often.line(line)
    kept = [str(e) for e in often.errors]
    assert kept == [str(e) for e in once.errors]
    assert kept == ["ModuleNotFoundError: No module named 'torchvision'", REPEATED_FAILURE[-1]]
    report, first = describe("sd-scripts", "kohya", often, 1), describe("sd-scripts", "kohya", once, 1)
    assert (report.kind, report.message, report.hint) == (first.kind, first.message, first.hint)
    assert report.kind == "not_installed" and "No module named 'torchvision'" in report.message


def test_a_rank_that_raises_the_same_error_again_is_named_the_same() -> None:
    once, often = RankWatch(), RankWatch()
    once.see(1, "RuntimeError: Connection closed by peer")
    once.see(0, "ValueError: bad batch")
    for _ in range(100):
        often.see(1, "RuntimeError: Connection closed by peer")
        often.see(0, "ValueError: bad batch")
    assert often.failure() == once.failure()
    assert often.failure() is not None and often.failure().rank == 0  # the cause, not the peer's consequence
