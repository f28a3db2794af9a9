"""The rules of waiting: suspending a node, waking it (timer or event), delivering events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from state.history import HistoryKind
from state.records import (
    RUN_TERMINAL,
    DeliveryOutcome,
    NodeState,
    NodeStatus,
    OutboxMessage,
    WakeKind,
    Wakeup,
)
from state.rules.changes import Condition, Event, FollowUps, NodeChange, Verdict, Wait
from state.rules.runs import live

__all__ = [
    "Admission",
    "InboxEvent",
    "admit_event",
    "consume",
    "fire_timer",
    "first_due",
    "match",
    "park",
    "stored_event",
    "suspend",
    "suspendable",
    "wakeup_of",
]

_RUNNING_AS_READ = Condition(status_in=frozenset({NodeStatus.RUNNING}), as_read=True)
_WAITING_AS_READ = Condition(status_in=frozenset({NodeStatus.WAITING}), as_read=True)


class InboxEvent(NamedTuple):
    """An event in a run's inbox, as a rule needs it."""

    event_id: str
    name: str
    payload: Any = None


class Admission(NamedTuple):
    """Whether a delivered event enters the run's inbox; if not, the outcome and its record."""

    #: None: admit it (insert it, then look for a waiter).
    outcome: DeliveryOutcome | None = None
    history: Event | None = None


def suspendable(node: NodeState | None) -> bool:
    """Only a running node suspends (a duplicate task of a parked or settled node does not)."""
    return node is not None and node.status == NodeStatus.RUNNING


def first_due(previous: float | None, due_at: float | None) -> float | None:
    """The deadline of a node suspending again: its first one (a re-run never pushes it later)."""
    return previous if previous is not None else due_at


def suspend(
    node: NodeState | None,
    wait: Wait | None,
    oldest: InboxEvent | None,
    *,
    event: str | None,
    due_at: float | None,
    now: float,
) -> NodeChange:
    """Take ``oldest`` (the run's oldest unconsumed event named ``event``), or park the node."""
    if node is None or not suspendable(node):
        return NodeChange(verdict=Verdict.MISSING if node is None else Verdict.REFUSED, node=node)
    due = first_due(None if wait is None else wait.due_at, due_at)
    if event is not None and oldest is not None:
        return consume(node, oldest, due_at=due)
    return park(node, event=event, due_at=due, now=now)


def consume(node: NodeState, ev: InboxEvent, *, due_at: float | None) -> NodeChange:
    """The running node takes an event already in the inbox: it goes on, woken by it."""
    return NodeChange(
        verdict=Verdict.APPLIED,
        node=node,
        condition=_RUNNING_AS_READ,
        follow=FollowUps(
            history=(
                Event(
                    kind=HistoryKind.EVENT_CONSUMED,
                    node_id=node.node_id,
                    data={"event": ev.name, "id": ev.event_id},
                ),
            )
        ),
        wait=Wait(event=ev.name, due_at=due_at, woken=WakeKind.EVENT, woke_event=ev.event_id),
        consumed=ev.event_id,
    )


def park(node: NodeState, *, event: str | None, due_at: float | None, now: float) -> NodeChange:
    """``running`` to ``waiting`` on ``event`` and/or until ``due_at`` (its first deadline)."""
    return NodeChange(
        verdict=Verdict.APPLIED,
        node=replace(node, status=NodeStatus.WAITING, updated_at=now),
        condition=_RUNNING_AS_READ,
        follow=FollowUps(
            history=(
                Event(
                    kind=HistoryKind.NODE_WAITING,
                    node_id=node.node_id,
                    data={"event": event, "due_at": due_at},
                ),
            ),
            touch=True,
        ),
        wait=Wait(event=event, due_at=due_at),
    )


def fire_timer(
    node: NodeState | None,
    wait: Wait | None,
    run_status: str | None,
    *,
    now: float,
    at: float,
    outbox: Sequence[OutboxMessage],
) -> NodeChange:
    """Wake a parked node of an active run whose timer is due by ``now`` (stamped ``at``), once."""
    if not live(run_status) or node is None or wait is None:
        return NodeChange(verdict=Verdict.REFUSED, node=node)
    if node.status != NodeStatus.WAITING or wait.woken is not None:
        return NodeChange(verdict=Verdict.REFUSED, node=node)
    if wait.due_at is None or wait.due_at > now:
        return NodeChange(verdict=Verdict.REFUSED, node=node)
    return NodeChange(
        verdict=Verdict.APPLIED,
        node=replace(node, status=NodeStatus.PENDING, updated_at=at),
        condition=_WAITING_AS_READ,
        follow=FollowUps(
            history=(
                Event(
                    kind=HistoryKind.TIMER_FIRED, node_id=node.node_id, data={"due_at": wait.due_at}
                ),
            ),
            outbox=tuple(outbox),
            touch=True,
            wake_run=True,
        ),
        wait=wait._replace(woken=WakeKind.TIMER, woke_event=None),
    )


def match(node: NodeState, wait: Wait, *, event_id: str, now: float) -> NodeChange:
    """A delivered event wakes the node parked waiting for it (``waiting`` to ``pending``)."""
    return NodeChange(
        verdict=Verdict.APPLIED,
        node=replace(node, status=NodeStatus.PENDING, updated_at=now),
        condition=_WAITING_AS_READ,
        follow=FollowUps(
            history=(
                Event(
                    kind=HistoryKind.EVENT_MATCHED,
                    node_id=node.node_id,
                    data={"event": wait.event, "id": event_id},
                ),
            ),
            touch=True,
            wake_run=True,
        ),
        wait=wait._replace(woken=WakeKind.EVENT, woke_event=event_id),
        consumed=event_id,
    )


def admit_event(run_status: str | None, *, seen: bool, name: str, event_id: str) -> Admission:
    """Dedupe a delivered event on its id; a finished run records it and drops it."""
    if run_status is None:
        return Admission(outcome=DeliveryOutcome.NO_RUN)
    data = {"event": name, "id": event_id}
    if seen:
        return Admission(
            outcome=DeliveryOutcome.DUPLICATE,
            history=Event(kind=HistoryKind.EVENT_DUPLICATE, data=data),
        )
    if run_status in RUN_TERMINAL:
        return Admission(
            outcome=DeliveryOutcome.FINISHED,
            history=Event(
                kind=HistoryKind.EVENT_UNMATCHED, data={**data, "reason": f"run is {run_status}"}
            ),
        )
    return Admission()


def stored_event(name: str, event_id: str) -> Event:
    """The record of an event that found nobody waiting (it stays in the inbox)."""
    return Event(kind=HistoryKind.EVENT_STORED, data={"event": name, "id": event_id})


def wakeup_of(wait: Wait | None, payload: Any = None) -> Wakeup | None:
    """What woke a node, from its wait (``payload``: the waking event's, read by the caller)."""
    if wait is None or wait.woken is None:
        return None
    if wait.woken == WakeKind.EVENT and wait.woke_event is not None:
        return Wakeup(
            kind=WakeKind.EVENT,
            event_name=wait.event,
            event_id=wait.woke_event,
            payload=payload,
        )
    if wait.woken == WakeKind.TIMER:
        return Wakeup(kind=WakeKind.TIMER, event_name=wait.event, due_at=wait.due_at)
    return None
