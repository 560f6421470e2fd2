"""The parsers' two bulk helpers do exactly what their one-at-a-time methods do: StepDraws.draw_all and
TracebackWatch.plain_lines."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.failures import TracebackWatch
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
