"""Change sets: what a rule decided an operation writes, in terms every backend translates.

A rule reads rows (as records or views) and returns one change: its verdict
(applied, or why not), the primary row's new values, the condition the write
of that row needs, and the follow-up writes. SQLite and the memory store write
a change in the transaction that read the rows; Scylla writes the primary row
as one LWT (the condition becomes its ``IF``) and stores the follow-ups with it
as its ``effects``.

Change sets are ``NamedTuple``: immutable (a rule's decision cannot be edited
on its way to the store, and the shared constants below cannot change) and
cheap to build, which matters because a rule runs on every operation.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from state.history import HistoryKind
from state.records import RUN_TERMINAL, Arrival, NodeState, OutboxMessage, Run

__all__ = [
    "ABSENT",
    "AS_READ",
    "KEEP",
    "NONE",
    "NO_FOLLOW_UPS",
    "Condition",
    "Event",
    "FailRun",
    "FollowUps",
    "NodeChange",
    "RunChange",
    "RunView",
    "Verdict",
    "Wait",
]


class Verdict(StrEnum):
    """Whether a change applies, and if not, why."""

    #: It applies (for a conditional write without a read: if its condition holds).
    APPLIED = "applied"
    #: There is no record to change.
    MISSING = "missing"
    #: The record is not in a state that allows it (settled, busy, moved on, finished).
    REFUSED = "refused"


class _Keep:
    """Marker for "leave this column as it is"."""

    def __repr__(self) -> str:
        return "KEEP"


#: A column the change leaves alone (as opposed to setting it to None).
KEEP: Final = _Keep()


class Condition(NamedTuple):
    """What the primary row must still be when the write lands.

    SQLite and the memory store hold their lock from the read to the write, so
    a change decided on rows they read holds by construction; they evaluate a
    condition only for writes made without a read (``cancel_nodes``,
    ``fire_join``: a conditional ``UPDATE``/``INSERT OR IGNORE``). Scylla sends it
    as the LWT's ``IF``.
    """

    #: The row must not exist (``IF NOT EXISTS``).
    absent: bool = False
    #: The row's status must be one of these (``IF status IN (...)``).
    status_in: frozenset[str] | None = None
    #: The row must be as it was read (Scylla: compare-and-set on what was read).
    as_read: bool = False
    #: The run's fence must be the one read (a fenced write).
    fence_as_read: bool = False

    def holds(self, status: str | None) -> bool:
        """Whether a row with ``status`` (None: no row) meets the existence and status parts."""
        if self.absent:
            return status is None
        if status is None:
            return False
        return self.status_in is None or status in self.status_in


#: No condition beyond what the transaction's read shows.
NONE: Final = Condition()
#: The row must not exist (``IF NOT EXISTS``).
ABSENT: Final = Condition(absent=True)
#: The row must be as it was read (a compare-and-set).
AS_READ: Final = Condition(as_read=True)


class Event(NamedTuple):
    """A history event a change appends."""

    kind: HistoryKind
    node_id: str | None = None
    data: Any = None


class FailRun(NamedTuple):
    """Fail the run (if it is still active) with the node that failed for good."""

    error: str
    outbox: tuple[OutboxMessage, ...] = ()


class FollowUps(NamedTuple):
    """The writes that follow a node change; each is idempotent, so a replay is harmless.

    The rule includes the live-run parts (successors, skips, arrivals, context,
    outbox, a fallback) only for a run that is active when it decides: a late
    node must not restart a finished run. ``touch`` and ``wake_run`` apply only
    while the run is active, whoever applies them.
    """

    history: tuple[Event, ...] = ()
    outbox: tuple[OutboxMessage, ...] = ()
    #: Node records to create ``pending`` if missing (successors, a fallback).
    pending: tuple[str, ...] = ()
    #: Node records to create ``skipped`` if missing.
    skipped: tuple[str, ...] = ()
    #: Join arrivals (a set keyed by predecessor).
    arrivals: tuple[Arrival, ...] = ()
    #: Context keys to write (last write wins).
    context: Mapping[str, Any] = MappingProxyType({})
    #: Context keys to delete.
    context_deletes: tuple[str, ...] = ()
    #: Node records to create ``pending`` if missing at other iterations: (node id, iteration).
    pending_at: tuple[tuple[str, int], ...] = ()
    #: Record progress on the run (its status index moves to the current bucket).
    touch: bool = False
    #: A node is pending again: a ``waiting`` run becomes ``running`` (``rules.wake_run``).
    wake_run: bool = False
    #: Fail the run with the node (``rules.transition`` to ``failed`` decides).
    fail_run: FailRun | None = None
    #: The node's wait ends with it (it settled while parked, or was woken).
    end_wait: bool = False


#: Nothing follows (a change that does not apply, or writes only its row).
NO_FOLLOW_UPS: Final = FollowUps()


class Wait(NamedTuple):
    """A parked (or once parked) node's wait: what it waits for, and what woke it."""

    event: str | None = None
    due_at: float | None = None
    #: A ``WakeKind`` value once woken; None while it waits.
    woken: str | None = None
    #: The id of the event that woke it.
    woke_event: str | None = None


class NodeChange(NamedTuple):
    """A node operation's change: the node record after it, its condition and follow-ups.

    ``node`` is the record as the change leaves it when it applies, and the
    record as read when it does not. A change decided without a read
    (cancelling, firing a join) carries in ``node`` the columns its write sets.
    ``MISSING`` changes of ``complete`` and ``fail`` still carry the write: a
    backend whose read is not linearizable (Scylla) tries it, and its
    condition decides.
    """

    verdict: Verdict
    node: NodeState | None = None
    condition: Condition = NONE
    follow: FollowUps = NO_FOLLOW_UPS
    #: The node's wait after the change (parking, consuming, waking); None: untouched.
    wait: Wait | None = None
    #: The inbox event this node consumes (its id), if any.
    consumed: str | None = None

    @property
    def applied(self) -> bool:
        """Whether the change applies."""
        return self.verdict is Verdict.APPLIED


class RunView(NamedTuple):
    """What the run rules read of a run row."""

    run_id: str
    #: A ``RunStatus`` value.
    status: str
    fence: int = 0
    #: Last progress (status change, attempt, commit, claim): what identifies a stall.
    progress_at: float = 0.0
    #: When a stall of the run was last claimed.
    reconciled_at: float | None = None
    #: The run's attempt (1, then one more per retry).
    attempt: int = 1


class RunChange(NamedTuple):
    """A run operation's change: the run row's new values, its condition and follow-ups."""

    verdict: Verdict
    run_id: str
    #: The status as read (None: no run).
    previous: str | None = None
    #: The status after the change (None: unchanged).
    status: str | None = None
    #: A run to create (creation, a cancel marker).
    record: Run | None = None
    output: Any = KEEP
    error: Any = KEEP
    #: The new fence (None: unchanged).
    fence: int | None = None
    #: A claimed stall's time (None: unchanged).
    reconciled_at: float | None = None
    #: Whether the change is progress (a status change always is).
    progress: bool = False
    condition: Condition = NONE
    history: tuple[Event, ...] = ()
    outbox: tuple[OutboxMessage, ...] = ()
    #: Node records to create ``pending`` with a new run (iteration 0).
    start_nodes: tuple[str, ...] = ()
    #: The context a new run starts with.
    context: Mapping[str, Any] = MappingProxyType({})
    #: Cancel the run's active nodes with this reason.
    cancel_nodes: str | None = None
    # --- a retry (``rules.operator.retry``) ---
    #: Node records (iteration 0) to delete with their waits and the arrivals they made.
    reset_nodes: tuple[str, ...] = ()
    #: Node records (iteration 0) to create ``pending`` once the reset ones are gone.
    pending_nodes: tuple[str, ...] = ()
    #: Node records (iteration 0) to create ``skipped`` if missing, and arrivals to add: what
    #: kept nodes' completions would have written on a live run.
    skipped_nodes: tuple[str, ...] = ()
    arrivals: tuple[Arrival, ...] = ()
    #: The run's new attempt (None: unchanged).
    attempt: int | None = None
    #: A finished run lives again: its rows lose the retention expiry they were given.
    revive: bool = False
    #: ``record`` replaces the run's row (a rejected start's, ``operator.restart_rejected``).
    replace: bool = False

    @property
    def applied(self) -> bool:
        """Whether the change applies."""
        return self.verdict is Verdict.APPLIED

    @property
    def terminal(self) -> bool:
        """Whether the change leaves the run finished (its rows start their retention)."""
        return self.status is not None and self.status in RUN_TERMINAL
