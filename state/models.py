"""Records the state store reads and writes; plain frozen data, JSON-serialisable payloads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from state.constants import NODE_ACTIVE, RUN_TERMINAL

__all__ = [
    "Arrival",
    "CommitResult",
    "Delivery",
    "DueTimer",
    "HistoryEvent",
    "NodeCompletion",
    "NodeState",
    "OutboxMessage",
    "Run",
    "SchemaChange",
    "Wakeup",
]

JSON = Any


@dataclass(frozen=True, kw_only=True)
class SchemaChange:
    """What ``StateStore.migrate`` did: ``before`` is None when it created the schema."""

    before: int | None
    after: int

    def describe(self) -> str:
        """``created (version 2)``, ``upgraded from version 1 to 2`` or ``already at version 2``."""
        if self.before is None:
            return f"created (version {self.after})"
        if self.before == self.after:
            return f"already at version {self.after}"
        return f"upgraded from version {self.before} to {self.after}"


@dataclass(frozen=True, kw_only=True)
class Run:
    """A workflow run: its blueprint snapshot, status and result."""

    run_id: str
    blueprint_id: str
    version: str
    status: str
    input: JSON
    snapshot: dict[str, Any]
    output: JSON = None
    error: str | None = None
    fence: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def terminal(self) -> bool:
        """Whether the run has finished (completed, failed or cancelled)."""
        return self.status in RUN_TERMINAL


@dataclass(frozen=True, kw_only=True)
class NodeState:
    """One node of one run at one iteration, as the store last recorded it."""

    run_id: str
    node_id: str
    iteration: int = 0
    status: str
    attempts: int = 0
    deliveries: int = 0
    output: JSON = None
    action: str | None = None
    #: Targets of the outgoing edges taken at completion; never evaluated again.
    edges_taken: tuple[str, ...] = ()
    error: str | None = None
    updated_at: float = 0.0

    @property
    def active(self) -> bool:
        """Whether the node is still pending, running or waiting."""
        return self.status in NODE_ACTIVE


@dataclass(frozen=True, kw_only=True)
class OutboxMessage:
    """A Kafka record to publish after the state change that caused it commits."""

    #: Stable id sent as the ``flowbridge-id`` header so consumers can dedupe.
    id: str
    topic: str
    key: str | None
    value: JSON
    created_at: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Arrival:
    """One predecessor's arrival at a join node."""

    join_id: str
    predecessor: str
    outcome: str


@dataclass(frozen=True, kw_only=True)
class NodeCompletion:
    """Everything one node completion writes, applied at most once per (run, node, iteration)."""

    run_id: str
    node_id: str
    iteration: int = 0
    attempt: int = 1
    output: JSON = None
    action: str | None = None
    edges_taken: tuple[str, ...] = ()
    #: Successors to create as ``pending`` (plain nodes on taken edges).
    pending: tuple[str, ...] = ()
    #: Successors (transitively) on edges not taken, recorded as ``skipped``.
    skipped: tuple[str, ...] = ()
    #: Arrivals at join nodes, taken or skipped.
    arrivals: tuple[Arrival, ...] = ()
    context_writes: dict[str, JSON] = field(default_factory=dict)
    outbox: tuple[OutboxMessage, ...] = ()
    #: The status the node is recorded with: ``completed`` normally, ``skipped`` for a skip.
    status: str = "completed"


@dataclass(frozen=True, kw_only=True)
class CommitResult:
    """The outcome of a conditional node completion."""

    #: False when an earlier delivery already completed the node (nothing was written).
    applied: bool
    #: The node as stored after the attempt (the earlier completion when not applied).
    node: NodeState
    #: The run's status after the commit.
    run_status: str


@dataclass(frozen=True, kw_only=True)
class HistoryEvent:
    """One entry of a run's history, in commit order."""

    run_id: str
    seq: int
    at: float
    kind: str
    node_id: str | None = None
    data: JSON = None


@dataclass(frozen=True, kw_only=True)
class Wakeup:
    """Why a suspended node runs again: an event it waited for, or its timer."""

    #: ``event`` or ``timer``.
    kind: str
    event_name: str | None = None
    event_id: str | None = None
    payload: JSON = None
    due_at: float | None = None


@dataclass(frozen=True, kw_only=True)
class DueTimer:
    """A timer whose time has come (an index hint: ``fire_timer`` decides)."""

    run_id: str
    node_id: str
    iteration: int
    due_at: float


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """What happened to an event delivered to a run."""

    #: ``matched`` (woke ``node_id``), ``stored`` (kept in the run's inbox until a node
    #: waits for it), ``duplicate`` (its event id was seen before), ``no-run`` or ``finished``.
    outcome: str
    node_id: str | None = None
    iteration: int = 0
