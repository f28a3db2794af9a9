"""The state of code workflow runs: history per generation, inbox, timers, dispatch marks.

A code workflow run is a ``runs`` row like any other (its snapshot says
``{"kind": "workflow", "workflow": NAME, "version": V}``) plus what
``WorkflowStore`` keeps: its activations in order (one row each, the commit is
the conditional insert of activation ``n`` after ``n - 1``), the inbox of items
that wake it (keyed, so a redelivered item is the same row), its durable
timers (by due time, for the reconciler), and two marks on the run: the last
activation whose commands were dispatched, and a ``blocked`` report when the
code diverged from the history.

Guarantees (every backend): an activation is committed once — of two
activations built on the same history, exactly one commits; an inbox item
consumed by a committed activation is never applied again; a timer row is
keyed by (run, generation, seq), so writing it twice is one timer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from state.records import OutboxMessage, Run

__all__ = ["WorkflowState", "WorkflowStore", "WorkflowTimer", "consumed_keys"]


@dataclass(frozen=True, kw_only=True)
class WorkflowState:
    """Everything an activation reads of one code workflow run."""

    run: Run
    #: The current generation (``continue_as_new`` starts the next one).
    gen: int
    #: The generation's activations in order, as stored (``Activation.to_json``).
    history: tuple[dict[str, Any], ...]
    #: Inbox items not consumed by a committed activation, in arrival order: (key, item).
    inbox: tuple[tuple[str, dict[str, Any]], ...]
    #: The last activation whose commands were dispatched (0: none yet).
    dispatched: int
    #: Why the run cannot go on without a code change (None: it can).
    blocked: dict[str, Any] | None = None

    @property
    def last(self) -> int:
        """The number of the last committed activation of this generation."""
        return len(self.history)


@dataclass(frozen=True, kw_only=True)
class WorkflowTimer:
    """A durable timer whose time has come (a hint: the activation decides)."""

    run_id: str
    gen: int
    seq: int
    due_at: float


def consumed_keys(history: Sequence[dict[str, Any]]) -> set[str]:
    """The inbox keys the committed activations applied."""
    return {str(i["key"]) for act in history for i in act.get("inputs", ())}


class WorkflowStore(Protocol):
    """The code workflow tables of one state store (``StateStore.workflows``)."""

    def put_inbox(self, run_id: str, key: str, item: dict[str, Any]) -> bool:
        """Add an item to the run's inbox once; False when that key is there or was consumed."""

    def load(self, run_id: str) -> WorkflowState | None:
        """The run with its current generation's history and unconsumed inbox (None: no run)."""

    def commit(
        self,
        run_id: str,
        *,
        gen: int,
        activation: dict[str, Any],
        consumed: Sequence[str],
        dispatched: bool = False,
    ) -> bool:
        """Append ``activation`` (its ``n`` follows the last) to ``gen``, once; True if it did.

        The consumed inbox keys are forgotten (the history records them). With
        ``dispatched`` the dispatched mark moves to this activation in the same write:
        its commands need no sending (the committing task runs its one activity itself).
        """

    def mark_dispatched(self, run_id: str, *, gen: int, n: int) -> None:
        """Record that activation ``n``'s commands were dispatched (never moves back)."""

    def set_blocked(self, run_id: str, report: dict[str, Any] | None) -> None:
        """Record (or, with None, clear) why the run cannot go on."""

    def set_timers(
        self,
        run_id: str,
        *,
        gen: int,
        put: Sequence[tuple[int, float]] = (),
        delete: Sequence[tuple[int, float]] = (),
    ) -> None:
        """Write timers ``(seq, due_at)`` and delete timers ``(seq, due_at)`` (idempotent)."""

    def due_timers(self, *, now: float, limit: int = 500) -> list[WorkflowTimer]:
        """Timers due by ``now`` of runs still active (index hints: the activation decides)."""

    def next_generation(self, run_id: str, *, gen: int, start: dict[str, Any]) -> bool:
        """Start generation ``gen + 1`` with the inbox item ``start``, once; True if it did.

        Unconsumed inbox items stay; the finished generation's timers are dropped.
        """

    def add_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        """Add outbox rows (what an activation emitted) by stable id: writing twice is once."""

    def finish(self, run_id: str, *, gen: int) -> None:
        """Give a finished run's workflow rows their retention (where rows expire by TTL)."""
