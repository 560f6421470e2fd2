"""`loraforge compare`: train several backends or settings on one dataset and report them side by side.

The pieces, in the order they run: :mod:`.arms` (what to train), :mod:`.equivalence` (which backend option each
job setting becomes, and what is not the same), :mod:`.runner` (train the arms, measure them), :mod:`.rundata`
(read an arm back from its run folder), :mod:`.report` (report.json, report.html, the terminal table).

Cluster sweeps feed finished run folders into :func:`build_report` directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.compare.report import Report

__all__ = ["build_report"]


def build_report(arms_results: Any, out_dir: Any, **kwargs: Any) -> Report:
    """See :func:`orchestrator.compare.report.build_report` (imported lazily: it pulls in matplotlib)."""
    from orchestrator.compare.report import build_report as build

    return build(arms_results, out_dir, **kwargs)
