"""The log parsers' bulk helpers do exactly what one line or one draw at a time does: StepDraws.draw_all,
TracebackWatch.plain_lines and Lines.next_match."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.failures import TracebackWatch
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
