"""Every kind of history event flowbridge writes, defined once.

The rules (``state.rules``) stage the store's own events; ``tasks`` and
``bridge`` append theirs with ``StateStore.append_history``. A run's history is
what workflow-as-code will replay, so a kind, once written, keeps its meaning.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["HistoryKind", "node_kind", "run_kind"]


class HistoryKind(StrEnum):
    """The kind of one history event (``<subject>.<what happened>``)."""

    #: The run was created (data: its blueprint id).
    RUN_CREATED = "run.created"
    #: The run moved to ``pending`` (a status change by ``set_run_status``).
    RUN_PENDING = "run.pending"
    #: The run moved to ``running`` (its first node started, or a waiting run woke).
    RUN_RUNNING = "run.running"
    #: Every live node of the run is parked.
    RUN_WAITING = "run.waiting"
    #: The run completed (data: the error, if any, of a run created finished).
    RUN_COMPLETED = "run.completed"
    #: The run failed (data: the error).
    RUN_FAILED = "run.failed"
    #: The run was cancelled (data: the reason; ``marker`` for a cancel before the start).
    RUN_CANCELLED = "run.cancelled"
    #: A code workflow ignored an input: a ref nobody awaits, a late result (data: the message).
    RUN_WARNING = "run.warning"
    #: An operator paused the run: no node starts until it is resumed.
    RUN_PAUSED = "run.paused"
    #: An operator resumed a paused run (data: the status it resumed to).
    RUN_RESUMED = "run.resumed"
    #: An operator retried a finished run (data: its new attempt, the nodes it re-runs from,
    #: the node records it reset, the status it had).
    RUN_RETRIED = "run.retried"
    #: The reconciler claimed a stall of the run (data: how many jobs it re-emits).
    RUN_RECONCILED = "run.reconciled"
    #: A delivery claimed the node for an attempt (data: attempt and delivery numbers).
    NODE_STARTED = "node.started"
    #: The node completed (data: the action it chose).
    NODE_COMPLETED = "node.completed"
    #: The node was recorded skipped by a completion of its own (a join that cannot fire).
    NODE_SKIPPED = "node.skipped"
    #: An attempt failed and the node is pending again (data: attempt and error).
    NODE_RETRY = "node.retry"
    #: The node failed for good (data: the error and the fallback started, if any).
    NODE_FAILED = "node.failed"
    #: The node was cancelled (data: the reason).
    NODE_CANCELLED = "node.cancelled"
    #: The node parked on an event and/or a timer (data: the event name and due time).
    NODE_WAITING = "node.waiting"
    #: The dispatch check found the node's task lost or orphaned and sent it again (data: why,
    #: how: ``redispatched`` or ``requeued``, the attempt and when the lost copy was sent).
    NODE_REDISPATCHED = "node.redispatched"
    #: A delivery found the node already running (written by ``tasks``).
    NODE_BUSY = "node.busy"
    #: A delivery found the node outside the frontier and did nothing (written by ``tasks``).
    NODE_IGNORED = "node.ignored"
    #: A join's conditional ``fired`` write succeeded: its node record is pending.
    JOIN_FIRED = "join.fired"
    #: A parked node's timer woke it (data: its due time).
    TIMER_FIRED = "timer.fired"
    #: A suspending node took an event already in the run's inbox (data: name and id).
    EVENT_CONSUMED = "event.consumed"
    #: A delivered event woke the node waiting for it (data: name and id).
    EVENT_MATCHED = "event.matched"
    #: A delivered event found nobody waiting and stays in the inbox (data: name and id).
    EVENT_STORED = "event.stored"
    #: A delivered event's id was seen before (data: name and id).
    EVENT_DUPLICATE = "event.duplicate"
    #: An event arrived for a finished run and was dropped (data: name, id and reason).
    EVENT_UNMATCHED = "event.unmatched"


#: Kinds by value (a dict lookup: ``HistoryKind(value)`` costs an enum call on every commit).
_BY_VALUE: dict[str, HistoryKind] = {k.value: k for k in HistoryKind}


def run_kind(status: str) -> HistoryKind:
    """The event a run's move to ``status`` records (``run.<status>``)."""
    return _BY_VALUE[f"run.{status}"]


def node_kind(status: str) -> HistoryKind:
    """The event a node's completion with ``status`` records (``node.completed``/``skipped``)."""
    return _BY_VALUE[f"node.{status}"]
