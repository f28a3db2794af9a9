"""``any``, ``race`` and ``quorum``: fire on the first completed branch(es).

``any`` is flowcraft's: the join runs once on the first branch that completes,
the other branches go on, and a failed branch fails the run (flowcraft also
runs an ``any`` join again for each later arrival; flowbridge decides it once).
``race`` and ``quorum`` are flowbridge's: they cancel the losers and tolerate a
failed branch while enough can still complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.joins.base import Arrivals, Decision, JoinOption, JoinStrategy

__all__ = ["AnyJoin", "QuorumJoin", "RaceJoin"]


class _FirstN(JoinStrategy):
    """Fire once ``need`` branches completed; fail when that can no longer happen."""

    tolerates_failure = True
    cancels_losers = True
    first_wins = True

    def need(self, options: Mapping[str, Any]) -> int:
        """How many completed branches fire the join."""
        return 1

    def decide(self, options: Mapping[str, Any], arrivals: Arrivals) -> Decision:
        """Fire on enough completions; wait while they are still possible."""
        need = self.need(options)
        done = arrivals.completed
        if done >= need:
            return Decision("fire")
        if done + arrivals.outstanding >= need:
            return Decision("wait")
        if arrivals.all_skipped:
            return Decision("skip")
        return Decision(
            "fail",
            f"join {arrivals.join_id!r} ({self.name}) needs {need} completed branch(es); "
            f"only {done} completed and {arrivals.outstanding} can still arrive",
        )


class AnyJoin(JoinStrategy):
    """flowcraft's ``any``: fire on the first completed branch; a failed branch fails the run."""

    name = "any"
    first_wins = True

    def decide(self, options: Mapping[str, Any], arrivals: Arrivals) -> Decision:
        """Fire on the first completion; a branch none of whose arrivals completed waits."""
        if arrivals.completed:
            return Decision("fire")
        if arrivals.all_skipped:
            return Decision("skip")
        return Decision("wait")


class RaceJoin(_FirstN):
    """``race``: the first completed branch wins; the others are cancelled."""

    name = "race"


class QuorumJoin(_FirstN):
    """Fire once ``n`` branches completed; the others are cancelled."""

    name = "quorum"
    options = (JoinOption("n", int, "how many completed branches fire the join", "bad-quorum"),)

    def need(self, options: Mapping[str, Any]) -> int:
        """The ``n`` of the blueprint."""
        return int(options.get("n") or 1)

    def check(self, options: Mapping[str, Any], predecessors: int | None) -> list[tuple[str, str]]:
        """``n`` is required, at least 1 and at most the number of predecessors."""
        n = options.get("n")
        if n is None:
            return [
                (
                    "bad-quorum",
                    "joinStrategy 'quorum' needs 'n', the number of arrivals to wait for",
                )
            ]
        if n < 1:
            return [("bad-quorum", f"quorum n must be at least 1, got {n}")]
        if predecessors is not None and n > predecessors:
            return [("bad-quorum", f"quorum n={n} is more than its {predecessors} predecessor(s)")]
        return []
