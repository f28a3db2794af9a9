"""The rules of node leases: when a running node counts as stalled, and who may renew its lease.

A worker claims a node attempt with a lease (``begin_attempt``) and renews it
while the attempt runs (``renew_lease``). A ``running`` node with a lease is
stalled exactly when the lease expired, however long it has run; a node
without one (``pending``, or claimed by a worker with leases off) keeps the
older rule: no change for ``stalled_after_s``. These rules are pure: the
reconciler and a delivery deciding on a takeover ask them about a record read.
"""

from __future__ import annotations

from dataclasses import replace

from state.records import NodeState, NodeStatus

__all__ = ["expired", "lease_left", "leased", "renewed", "stalled"]


def leased(node: NodeState) -> bool:
    """Whether the node runs an attempt under a lease."""
    return node.status == NodeStatus.RUNNING and node.lease_until is not None


def expired(node: NodeState, *, now: float) -> bool:
    """Whether the node runs under a lease that has expired (its worker stopped renewing)."""
    return leased(node) and now > (node.lease_until or 0.0)


def stalled(node: NodeState, *, now: float, older_than: float) -> bool:
    """Whether the node made no progress its holder vouches for: a lapsed lease, or an old record.

    ``older_than`` is ``now - stalled_after_s``, the rule of a node without a lease.
    """
    if leased(node):
        return expired(node, now=now)
    return node.updated_at < older_than


def lease_left(node: NodeState, *, now: float) -> float | None:
    """Seconds left on the running node's lease (negative once expired); None without one."""
    if not leased(node) or node.lease_until is None:
        return None
    return node.lease_until - now


def renewed(
    node: NodeState | None, *, attempt: int, claimed_by: str, until: float
) -> NodeState | None:
    """The record with its lease moved to ``until``, or None when ``claimed_by`` lost it.

    Only the holder of the running attempt renews: the node is ``running``, at
    ``attempt``, and claimed by ``claimed_by`` (a takeover claimed it for
    another). A lease never moves earlier.
    """
    if (
        node is None
        or node.status != NodeStatus.RUNNING
        or node.attempts != attempt
        or node.claimed_by != claimed_by
    ):
        return None
    return replace(node, lease_until=max(until, node.lease_until or 0.0))
