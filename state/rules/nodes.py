"""The rules of a node record: claim an attempt, complete, retry, fail, cancel, fire a join."""

from __future__ import annotations

from collections.abc import Sequence

from state.history import HistoryKind, node_kind
from state.records import (
    NODE_ACTIVE,
    Arrival,
    NodeCompletion,
    NodeState,
    NodeStatus,
    OutboxMessage,
)
from state.rules.changes import (
    ABSENT,
    AS_READ,
    Condition,
    Event,
    FailRun,
    FollowUps,
    NodeChange,
    Verdict,
)
from state.rules.runs import live

__all__ = ["cancel", "claim", "complete", "created", "fail", "fire_join", "retry"]

#: A node record key: (run id, node id, iteration).
Key = tuple[str, str, int]

_ACTIVE = Condition(status_in=frozenset(NODE_ACTIVE))


def _moved(
    node: NodeState,
    status: str,
    now: float,
    *,
    attempts: int | None = None,
    deliveries: int | None = None,
    error: str | _Same | None = None,
    lease: tuple[str | None, float | None] | None = None,
) -> NodeState:
    """``node`` with a new status (and the given columns): ``dataclasses.replace``, faster.

    This is on every claim and retry; ``replace`` introspects the fields on each call.
    """
    return NodeState(
        run_id=node.run_id,
        node_id=node.node_id,
        iteration=node.iteration,
        status=status,
        attempts=node.attempts if attempts is None else attempts,
        deliveries=node.deliveries if deliveries is None else deliveries,
        output=node.output,
        action=node.action,
        edges_taken=node.edges_taken,
        error=node.error if isinstance(error, _Same) else error,
        updated_at=now,
        claimed_by=node.claimed_by if lease is None else lease[0],
        lease_until=node.lease_until if lease is None else lease[1],
    )


class _Same:
    """Marker: keep the node's error."""


_SAME = _Same()


def created(key: Key, *, now: float) -> NodeState:
    """The record a node gets when its own task creates it (a batch item): ``pending``."""
    run_id, node_id, iteration = key
    return NodeState(
        run_id=run_id,
        node_id=node_id,
        iteration=iteration,
        status=NodeStatus.PENDING,
        updated_at=now,
    )


def claim(
    node: NodeState | None,
    *,
    attempt: int,
    takeover: bool,
    now: float,
    claimed_by: str | None = None,
    lease_until: float | None = None,
) -> NodeChange:
    """Claim a node for ``attempt``: ``pending`` to ``running``, and count the delivery.

    A ``running`` node is claimed again only with ``takeover`` (a redelivery
    after its worker was lost), so a concurrent duplicate claims nothing.
    ``deliveries`` counts deliveries of one attempt; it restarts at 1 when the
    attempt number grows. The claim records ``claimed_by`` and its lease (both
    None: no lease, and a previous holder's lease is cleared).
    """
    if node is None:
        return NodeChange(verdict=Verdict.MISSING)
    claimable = (NodeStatus.PENDING, NodeStatus.RUNNING) if takeover else (NodeStatus.PENDING,)
    if node.status not in claimable:
        return NodeChange(verdict=Verdict.REFUSED, node=node)
    att = max(attempt, node.attempts, 1)
    deliveries = node.deliveries + 1 if att == node.attempts else 1
    return NodeChange(
        verdict=Verdict.APPLIED,
        node=_moved(
            node,
            NodeStatus.RUNNING,
            now,
            attempts=att,
            deliveries=deliveries,
            error=_SAME,
            lease=(claimed_by, lease_until),
        ),
        # The status, attempts and deliveries read: of two duplicates only one claims.
        condition=AS_READ,
        follow=FollowUps(
            history=(
                Event(
                    kind=HistoryKind.NODE_STARTED,
                    node_id=node.node_id,
                    data={"attempt": att, "delivery": deliveries},
                ),
            ),
            touch=True,
        ),
    )


def complete(
    node: NodeState | None, run_status: str | None, cp: NodeCompletion, *, now: float
) -> NodeChange:
    """Complete an active node once, with its successors, skips, arrivals, context and outbox.

    Only a live run gets those: a late node must not restart a finished run, so
    for one it records only the node and its history event.
    """
    if node is not None and node.status not in NODE_ACTIVE:
        return NodeChange(verdict=Verdict.REFUSED, node=node)
    done = NodeState(
        run_id=cp.run_id,
        node_id=cp.node_id,
        iteration=cp.iteration,
        status=cp.status,
        attempts=max(node.attempts if node is not None else 0, cp.attempt),
        deliveries=node.deliveries if node is not None else 0,
        output=cp.output,
        action=cp.action,
        edges_taken=tuple(cp.edges_taken),
        error=None,
        updated_at=now,
    )
    event = Event(kind=node_kind(cp.status), node_id=cp.node_id, data={"action": cp.action})
    if live(run_status):
        follow = FollowUps(
            history=(event,),
            end_wait=True,
            pending=tuple(cp.pending),
            skipped=tuple(cp.skipped),
            arrivals=tuple(cp.arrivals),
            context=dict(cp.context_writes),
            context_deletes=tuple(cp.context_deletes),
            pending_at=tuple(cp.pending_at),
            outbox=tuple(cp.outbox),
            touch=True,
        )
    else:
        follow = FollowUps(history=(event,), end_wait=True)
    return NodeChange(
        verdict=Verdict.MISSING if node is None else Verdict.APPLIED,
        node=done,
        condition=_ACTIVE,
        follow=follow,
    )


def retry(node: NodeState | None, *, attempt: int, error: str, now: float) -> NodeChange:
    """Put an active node back to ``pending`` after failed ``attempt`` (the higher attempt kept)."""
    if node is None:
        return NodeChange(verdict=Verdict.MISSING)
    if node.status not in NODE_ACTIVE:
        return NodeChange(verdict=Verdict.REFUSED, node=node)
    event = Event(
        kind=HistoryKind.NODE_RETRY, node_id=node.node_id, data={"attempt": attempt, "error": error}
    )
    return NodeChange(
        verdict=Verdict.APPLIED,
        node=_moved(
            node, NodeStatus.PENDING, now, attempts=max(node.attempts, attempt), error=error
        ),
        condition=_ACTIVE,
        # A parked node retried: a waiting run has a pending node again.
        follow=FollowUps(history=(event,), touch=True, wake_run=node.status == NodeStatus.WAITING),
    )


def fail(
    key: Key,
    node: NodeState | None,
    run_status: str | None,
    *,
    error: str,
    fallback: str | None,
    fail_run: bool,
    outbox: Sequence[OutboxMessage],
    skipped: Sequence[str],
    arrivals: Sequence[Arrival],
    now: float,
) -> NodeChange:
    """Fail an active node for good: start its fallback, or fail the run, or arrive at its joins.

    With ``fail_run`` False and no fallback (a failure a join tolerates), the
    skips and arrivals are written as a completion would write them. None of it
    happens on a finished run.
    """
    if node is not None and node.status not in NODE_ACTIVE:
        return NodeChange(verdict=Verdict.REFUSED, node=node)
    run_id, node_id, iteration = key
    base = node or NodeState(run_id=run_id, node_id=node_id, iteration=iteration, status="")
    event = Event(
        kind=HistoryKind.NODE_FAILED, node_id=node_id, data={"error": error, "fallback": fallback}
    )
    follow = FollowUps(history=(event,), end_wait=True)
    if live(run_status) and fallback is not None:
        follow = follow._replace(pending=(fallback,), touch=True)
    elif live(run_status) and fail_run:
        follow = follow._replace(fail_run=FailRun(error=error, outbox=tuple(outbox)))
    elif live(run_status):
        follow = follow._replace(skipped=tuple(skipped), arrivals=tuple(arrivals), touch=True)
    return NodeChange(
        verdict=Verdict.MISSING if node is None else Verdict.APPLIED,
        node=_moved(base, NodeStatus.FAILED, now, error=error),
        condition=_ACTIVE,
        follow=follow,
    )


def cancel(key: Key, *, reason: str, now: float) -> NodeChange:
    """Cancel the node if it is active (a race's loser): decided by the write's condition."""
    run_id, node_id, iteration = key
    return NodeChange(
        verdict=Verdict.APPLIED,
        node=NodeState(
            run_id=run_id,
            node_id=node_id,
            iteration=iteration,
            status=NodeStatus.CANCELLED,
            error=reason,
            updated_at=now,
        ),
        condition=_ACTIVE,
        follow=FollowUps(
            history=(
                Event(kind=HistoryKind.NODE_CANCELLED, node_id=node_id, data={"reason": reason}),
            ),
            end_wait=True,
        ),
    )


def fire_join(key: Key, *, now: float) -> NodeChange:
    """Fire a join once: its ``pending`` record is created only if there is none.

    A join that was skipped has a record already, so it never fires. Fired
    while the run waits (a late chord body), the run is running again.
    """
    run_id, join_id, iteration = key
    return NodeChange(
        verdict=Verdict.APPLIED,
        node=NodeState(
            run_id=run_id,
            node_id=join_id,
            iteration=iteration,
            status=NodeStatus.PENDING,
            updated_at=now,
        ),
        condition=ABSENT,
        follow=FollowUps(
            history=(Event(kind=HistoryKind.JOIN_FIRED, node_id=join_id),),
            touch=True,
            wake_run=True,
        ),
    )
