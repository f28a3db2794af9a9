"""``all`` (the default) and ``all-settled``: wait for every branch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.joins.base import Arrivals, Decision, JoinStrategy

__all__ = ["AllJoin", "AllSettledJoin"]


class AllJoin(JoinStrategy):
    """Fire when every branch has arrived; the first failed branch fails the run at once."""

    name = "all"
    chord_eligible = True

    def decide(self, options: Mapping[str, Any], arrivals: Arrivals) -> Decision:
        """Fail fast on a failed branch, else wait for all of them."""
        failed = arrivals.failed
        if failed:
            return Decision("fail", f"join {arrivals.join_id!r}: branch {failed[0]!r} failed")
        if not arrivals.complete:
            return Decision("wait")
        return Decision("skip") if arrivals.all_skipped else Decision("fire")


class AllSettledJoin(JoinStrategy):
    """Fire when every branch has settled, failed ones included (the join sees each outcome)."""

    name = "all-settled"
    tolerates_failure = True

    def decide(self, options: Mapping[str, Any], arrivals: Arrivals) -> Decision:
        """Wait for every branch, whatever its outcome."""
        if not arrivals.complete:
            return Decision("wait")
        return Decision("skip") if arrivals.all_skipped else Decision("fire")
