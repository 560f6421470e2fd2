"""A chunk of a trainer's output cut into its lines, for the log parsers' hot path: most lines hold none of the
words a parser looks for, and one regex search over the whole text finds the next line that does, far faster than
one search per line.

A line ends at \\r or \\n (tqdm redraws with \\r): the chunk must end with one of them.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate, count
from operator import add


class Lines:
    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.replace("\r", "\n").split("\n")
        self.lines.pop()  # the empty piece after the last line's end
        # where each line's successor starts in ``text`` (its end, plus one for its \r or \n): all in C
        self.ends = list(map(add, accumulate(map(len, self.lines)), count(1)))

    def __len__(self) -> int:
        return len(self.lines)

    def next_match(self, index: int, pattern: re.Pattern[str]) -> int:
        """The first line from ``index`` on in which ``pattern`` matches; ``len(self)`` when none does. (A match
        must not cross a line's end.)"""
        match = pattern.search(self.text, self.ends[index - 1] if index else 0)
        return len(self.lines) if match is None else bisect_right(self.ends, match.start())
