"""Child runs (``subflow``): their ids, starting them, telling the parent, cancelling them.

A child run is a run of its own (its own id, history and status) whose record
names its parent node (``Run.parent``). Its id is fixed by the parent's node,
iteration and attempt, so a redelivered parent attempt finds the child it
started instead of starting another, and a retry starts a new one.

Exactly once, through the outbox: the state change that finishes a child
also writes an event for its parent run (``subflow:<child id>``, with an event
id of its own, so a redelivery is a duplicate); the bridge delivers it like any
event and it wakes the parent's node. The change that finishes a parent
writes a ``cancel`` job for each child still running (cancelling, failing or
an early end of the parent stops its children).
"""

from __future__ import annotations

import uuid
from typing import Any

from state.constants import NODE_ACTIVE
from state.records import OutboxMessage, Run
from tasks.blueprint import Blueprint
from tasks.builtins import ChildRun, child_event
from tasks.runtime import Runtime

__all__ = ["SUBFLOW_USES", "child_cancels", "child_run", "child_run_id", "parent_notice"]

SUBFLOW_USES = "subflow"
#: How deep subflows may nest (a blueprint that runs itself as a subflow stops here).
MAX_DEPTH = 32


def child_run_id(
    run_id: str, node_id: str, iteration: int, attempt: int, run_attempt: int = 1
) -> str:
    """The id of the child run one attempt of a ``subflow`` node starts.

    A retried run's attempt starts children of its own (its node attempts count
    from 1 again, so the run's attempt is part of the name).
    """
    name = f"flowbridge:child:{run_id}:{node_id}:{iteration}:{attempt}"
    return str(
        uuid.uuid5(uuid.NAMESPACE_URL, name if run_attempt == 1 else f"{name}:r{run_attempt}")
    )


def parent_link(run: Run, node_id: str, iteration: int) -> dict[str, Any]:
    """What a child records of its parent (``Run.parent``)."""
    depth = 1 + (run.parent.get("depth", 0) if isinstance(run.parent, dict) else 0)
    return {"run_id": run.run_id, "node_id": node_id, "iteration": iteration, "depth": depth}


def parent_notice(rt: Runtime, run: Run, status: str) -> list[OutboxMessage]:
    """The event that tells a child's parent the child ended (none for a run without parent)."""
    parent = run.parent
    if not isinstance(parent, dict) or not parent.get("run_id"):
        return []
    event_id = f"child-ended:{run.run_id}"
    return [
        OutboxMessage(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowbridge:{event_id}")),
            topic=rt.settings.topic("events"),
            key=str(parent["run_id"]),
            value={
                "v": 1,
                "type": "event",
                "run_id": parent["run_id"],
                "name": child_event(run.run_id),
                "event_id": event_id,
                "payload": {"run_id": run.run_id, "status": status},
            },
        )
    ]


def child_cancels(rt: Runtime, run: Run, bp: Blueprint, reason: str) -> list[OutboxMessage]:
    """``cancel`` jobs for the children of the run's active ``subflow`` nodes."""
    subflows = [n.id for n in bp.nodes if n.uses == SUBFLOW_USES]
    if not subflows:
        return []
    recs = rt.store.get_nodes(run.run_id, subflows)
    jobs: list[OutboxMessage] = []
    for rec in recs.values():
        if rec.status not in NODE_ACTIVE or rec.attempts < 1:
            continue
        child = child_run_id(run.run_id, rec.node_id, rec.iteration, rec.attempts, run.attempt)
        jobs.append(
            OutboxMessage(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowbridge:cancel-child:{child}")),
                topic=rt.settings.topic("jobs"),
                key=child,
                value={
                    "v": 1,
                    "type": "cancel",
                    "run_id": child,
                    "reason": f"its parent run {run.run_id!r} {reason}",
                },
            )
        )
    return jobs


def child_run(rt: Runtime, run_id: str) -> ChildRun | None:
    """A child run as its parent's node reads it when it wakes."""
    child = rt.store.get_run(run_id)
    if child is None:
        return None
    outputs: dict[str, Any] = {}
    terminals: dict[str, Any] = {}
    if child.snapshot:
        bp = rt.blueprint_of(child)
        recs = rt.store.get_nodes(run_id, bp.node_ids)
        outputs = {n: r.output for n, r in recs.items() if r.status == "completed"}
        terminals = {n: outputs[n] for n in bp.analysis.terminal_nodes if n in outputs}
    return ChildRun(
        run_id=run_id,
        status=child.status,
        output=child.output,
        error=child.error,
        terminals=terminals,
        outputs=outputs,
        context=rt.store.get_context(run_id),
    )
