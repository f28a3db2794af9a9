"""Records the state store reads and writes, and the statuses they carry.

Statuses and outcomes are ``StrEnum`` members: each compares equal to (and
serialises as) its value, so a record read back from any backend and a plain
string from an older caller mean the same thing. Payloads are JSON values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "NODE_ACTIVE",
    "NODE_SETTLED",
    "RUN_ACTIVE",
    "RUN_RUNNABLE",
    "RUN_TERMINAL",
    "TEXT_VALUE",
    "Arrival",
    "ArrivalOutcome",
    "CommitResult",
    "Delivery",
    "DeliveryOutcome",
    "DueTimer",
    "HistoryEvent",
    "NodeCompletion",
    "NodeState",
    "NodeStatus",
    "OutboxMessage",
    "RetryOutcome",
    "Run",
    "RunFinish",
    "RunStatus",
    "SchemaChange",
    "WakeKind",
    "Wakeup",
]

JSON = Any


class RunStatus(StrEnum):
    """Where a run is in its lifecycle: ``pending → running ↔ waiting → a terminal status``."""

    #: Created; no node has been claimed yet.
    PENDING = "pending"
    #: A node is pending or running.
    RUNNING = "running"
    #: Every live node is parked on an event or a timer (the reconciler's timer pass wakes it).
    WAITING = "waiting"
    #: Held by an operator: no node starts (in-flight ones finish); ``resume`` continues it.
    PAUSED = "paused"
    #: Finished: no node is pending, running or waiting on the taken paths.
    COMPLETED = "completed"
    #: Finished: a node failed for good (and no fallback or join tolerated it), or a start failed.
    FAILED = "failed"
    #: Finished: cancelled by a command (or a cancel marker left before the start).
    CANCELLED = "cancelled"


class NodeStatus(StrEnum):
    """The status of one node record (one node of one run at one iteration)."""

    #: Created (a start node, a successor, a fired join, a woken node): waiting for a worker.
    PENDING = "pending"
    #: Claimed by a delivery of its task (``begin_attempt``).
    RUNNING = "running"
    #: Parked on an event and/or a timer (``suspend_node``).
    WAITING = "waiting"
    #: Completed with an output and the edges it took.
    COMPLETED = "completed"
    #: Failed for good (retries exhausted or a non-retryable error).
    FAILED = "failed"
    #: On an edge that was not taken (skips propagate; a join counts it as settled).
    SKIPPED = "skipped"
    #: Cancelled with its run, or as the loser of a race.
    CANCELLED = "cancelled"


class ArrivalOutcome(StrEnum):
    """How a predecessor arrived at a join (an arrival set is keyed by predecessor)."""

    #: The predecessor completed and took the edge to the join.
    COMPLETED = "completed"
    #: The predecessor failed and the join's policy tolerates it.
    FAILED = "failed"
    #: The predecessor was skipped, or did not take the edge to the join.
    SKIPPED = "skipped"


class WakeKind(StrEnum):
    """What woke a parked node."""

    #: An event it waited for (or found in the run's inbox when it suspended).
    EVENT = "event"
    #: Its timer came due.
    TIMER = "timer"


class DeliveryOutcome(StrEnum):
    """What happened to an event delivered to a run."""

    #: It woke the oldest node waiting for its name.
    MATCHED = "matched"
    #: Nobody waits for it yet: kept in the run's inbox for a later ``suspend_node``.
    STORED = "stored"
    #: Its event id was delivered to this run before.
    DUPLICATE = "duplicate"
    #: No run with that id.
    NO_RUN = "no-run"
    #: The run has finished; the event is recorded and dropped.
    FINISHED = "finished"


#: Run statuses that can still change (a paused run too: its in-flight nodes still commit).
RUN_ACTIVE: frozenset[RunStatus] = frozenset(
    {RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PAUSED}
)
#: Run statuses in which nodes are dispatched and claimed (active, not paused).
RUN_RUNNABLE: frozenset[RunStatus] = frozenset(
    {RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING}
)
#: Run statuses that never change again.
RUN_TERMINAL: frozenset[RunStatus] = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}
)
#: Node statuses that can still change.
NODE_ACTIVE: frozenset[NodeStatus] = frozenset(
    {NodeStatus.PENDING, NodeStatus.RUNNING, NodeStatus.WAITING}
)
#: Node statuses that never change again.
NODE_SETTLED: frozenset[NodeStatus] = frozenset(
    {NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED}
)


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
    #: A ``RunStatus`` value.
    status: str
    input: JSON
    snapshot: dict[str, Any]
    output: JSON = None
    error: str | None = None
    fence: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    #: 1, then one more for each ``retry_run`` (part of its node tasks' ids).
    attempt: int = 1
    #: The node this run is a child of (a ``subflow``): ``{"run_id", "node_id", "iteration"}``.
    parent: JSON = None

    @property
    def terminal(self) -> bool:
        """Whether the run has finished (completed, failed or cancelled)."""
        return self.status in RUN_TERMINAL

    @property
    def rejected(self) -> bool:
        """Whether this is the failed record a rejected start left (it never started)."""
        return self.status == RunStatus.FAILED and not self.snapshot


@dataclass(frozen=True, kw_only=True)
class NodeState:
    """One node of one run at one iteration, as the store last recorded it."""

    run_id: str
    node_id: str
    iteration: int = 0
    #: A ``NodeStatus`` value.
    status: str
    attempts: int = 0
    deliveries: int = 0
    output: JSON = None
    action: str | None = None
    #: Targets of the outgoing edges taken at completion; never evaluated again.
    edges_taken: tuple[str, ...] = ()
    error: str | None = None
    updated_at: float = 0.0
    #: Who runs the current attempt (``host:pid:task id``); None: claimed without a lease.
    claimed_by: str | None = None
    #: Until when that attempt's lease holds (epoch seconds, renewed while it runs).
    lease_until: float | None = None

    @property
    def active(self) -> bool:
        """Whether the node is still pending, running or waiting."""
        return self.status in NODE_ACTIVE


#: The only key of an outbox value sent as its text, not as JSON (``emit(..., raw=True)``);
#: stored as JSON like every value, so no backend needs a column for it.
TEXT_VALUE = "$flowbridge:text"


@dataclass(frozen=True, kw_only=True)
class OutboxMessage:
    """A Kafka record to publish after the state change that caused it commits."""

    #: Stable id sent as the ``flowbridge-id`` header so consumers can dedupe.
    id: str
    topic: str
    key: str | None
    value: JSON
    created_at: float = 0.0
    #: Kafka headers to send besides ``flowbridge-id`` (the trace context: ``traceparent``).
    headers: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def text(text: str) -> JSON:
        """The stored value of a record whose bytes are ``text`` itself (UTF-8), not its JSON."""
        return {TEXT_VALUE: text}

    @staticmethod
    def is_reserved(value: JSON) -> bool:
        """Whether a user's value has the shape that marks text (and so cannot be sent as JSON)."""
        return isinstance(value, dict) and len(value) == 1 and TEXT_VALUE in value

    def wire_value(self) -> bytes:
        """The record's value as Kafka gets it: compact JSON, or the text of a raw emit."""
        if self.is_reserved(self.value) and isinstance(self.value[TEXT_VALUE], str):
            return str(self.value[TEXT_VALUE]).encode()
        return json.dumps(self.value, separators=(",", ":")).encode()

    def plain_value(self) -> JSON:
        """The value as the emitting code gave it (the text of a raw emit)."""
        if self.is_reserved(self.value):
            return self.value[TEXT_VALUE]
        return self.value


@dataclass(frozen=True, kw_only=True)
class Arrival:
    """One predecessor's arrival at a join node."""

    join_id: str
    predecessor: str
    #: An ``ArrivalOutcome`` value.
    outcome: str


@dataclass(frozen=True, kw_only=True)
class RunFinish:
    """A run's end carried by the completion of what the engine read as its last active node."""

    status: str
    output: JSON = None
    error: str | None = None
    outbox: tuple[OutboxMessage, ...] = ()


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
    #: Context keys to delete (none of them is also in ``context_writes``).
    context_deletes: tuple[str, ...] = ()
    outbox: tuple[OutboxMessage, ...] = ()
    #: The status the node is recorded with: ``completed`` normally, ``skipped`` for a skip.
    status: str = NodeStatus.COMPLETED
    #: Successors to create as ``pending`` at another iteration: ``(node id, iteration)``
    #: (a loop's next pass, or the node after a loop).
    pending_at: tuple[tuple[str, int], ...] = ()
    #: Finish the run with the completion when no other node of it is pending or running
    #: (checked in the completion's transaction where the store has them); None: never.
    finish: RunFinish | None = None


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
class RetryOutcome:
    """What ``StateStore.retry_run`` did."""

    #: Whether this call started the run's next attempt.
    applied: bool
    #: The run's attempt after the call (the new one when applied; 0: no such run).
    attempt: int = 0
    #: The run's status as the call read it (None: no such run).
    status: str | None = None
    #: Kept node records whose status was not the one the caller expected (then not applied).
    moved: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class HistoryEvent:
    """One entry of a run's history, in commit order."""

    run_id: str
    seq: int
    at: float
    #: A ``state.history.HistoryKind`` value (or a caller's own kind).
    kind: str
    node_id: str | None = None
    data: JSON = None


@dataclass(frozen=True, kw_only=True)
class Wakeup:
    """Why a suspended node runs again: an event it waited for, or its timer."""

    #: A ``WakeKind`` value.
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

    #: A ``DeliveryOutcome`` value: ``matched`` (woke ``node_id``), ``stored``, ``duplicate``,
    #: ``no-run`` or ``finished``.
    outcome: str
    node_id: str | None = None
    iteration: int = 0
