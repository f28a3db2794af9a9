"""A run's life outside node attempts: starting, cancelling, events, resumes, the chord body."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from state.constants import NODE_PENDING, RUN_ACTIVE, RUN_PENDING
from state.records import Delivery, OutboxMessage, Run
from tasks.blueprint import Blueprint
from tasks.builtins import RESUME_EVENT_ID, builtin
from tasks.engine.children import child_cancels, parent_notice
from tasks.engine.graph import try_fire
from tasks.engine.scope import RunScope
from tasks.errors import ResumeError
from tasks.events import lifecycle_events
from tasks.port import task_id
from tasks.runtime import Runtime

__all__ = [
    "cancel_run",
    "deliver_event",
    "fire_from_chord",
    "resume_node",
    "start_run",
]


#: How long a cancel waits for a reconciler holding the run's lock (then goes on unfenced).
CANCEL_LOCK_WAIT_S = 5.0


def start_run(
    rt: Runtime,
    bp: Blueprint,
    run_input: Any,
    *,
    run_id: str | None = None,
    parent: Mapping[str, Any] | None = None,
) -> tuple[bool, Run]:
    """Create a run of ``bp`` (idempotent on ``run_id``) and dispatch its pending start nodes.

    The run's context starts as its input (flowcraft's initial state: each key of
    an object input is a context key). ``parent`` links a child run to its node.
    """
    run_id = run_id or str(uuid.uuid4())
    starts = bp.analysis.start_nodes
    run = Run(
        run_id=run_id,
        blueprint_id=bp.id,
        version=bp.version,
        status=RUN_PENDING,
        input=run_input,
        snapshot=bp.to_dict(),
        parent=None if parent is None else dict(parent),
    )
    started = lifecycle_events(
        rt.settings,
        run_id,
        "started",
        enabled=bp.run_events,
        blueprint=bp.id,
        version=bp.version,
        input=run_input,
    )
    context = dict(run_input) if isinstance(run_input, Mapping) else None
    created, stored = rt.store.create_run(run, start_nodes=starts, outbox=started, context=context)
    if not created and stored.rejected:
        # A start of this id was rejected before (its blueprint was unknown, say) and left a
        # failed record; this one (its DLQ record replayed, or sent again) starts the run.
        created = rt.store.restart_rejected(
            run, start_nodes=starts, outbox=started, context=context
        )
        if created:
            stored = rt.store.get_run(run_id) or stored
    if created:
        rt.notify_outbox()
        rt.metrics.run_started(bp.id)
        # Just created: its start nodes are pending and its blueprint is the one in hand.
        for node_id in starts:
            rt.dispatch(bp, run_id, node_id)
        return created, stored
    if stored.status not in RUN_ACTIVE:
        return created, stored
    # A redelivered start repairs a crash between creating the run and dispatching.
    stored_bp = rt.blueprint_of(stored)
    recs = rt.store.get_nodes(run_id, stored_bp.analysis.start_nodes)
    for node_id, rec in recs.items():
        if rec.status == NODE_PENDING:
            rt.dispatch(
                stored_bp,
                run_id,
                node_id,
                attempt=max(rec.attempts + 1, 1),
                run_attempt=stored.attempt,
            )
    return created, stored


def cancel_run(rt: Runtime, run_id: str, reason: str = "cancelled") -> bool:
    """Cancel a run: nothing new is dispatched; in-flight tasks are revoked (best effort)."""
    before = rt.store.get_run(run_id)
    in_flight: list[str] = []
    outbox: list[OutboxMessage] = []
    bp = rt.blueprint_of(before) if before is not None and before.snapshot else None
    outbox += lifecycle_events(
        rt.settings,
        run_id,
        "cancelled",
        enabled=bp is None or bp.run_events,
        reason=reason,
    )
    if before is not None and bp is not None:
        for rec in rt.store.get_nodes(run_id, bp.node_ids).values():
            if rec.active:
                in_flight.append(
                    task_id(
                        run_id, rec.node_id, rec.iteration, max(rec.attempts, 1), before.attempt
                    )
                )
        # Its children stop with it; a child cancelled on its own tells its parent.
        outbox += child_cancels(rt, before, bp, "was cancelled")
        outbox += parent_notice(rt, before, "cancelled")
    # Under the run lock, with a fresh fence: a reconciler that lost its lock cannot undo it.
    with rt.port.run_locks().hold(run_id, wait_s=CANCEL_LOCK_WAIT_S) as fence:
        applied, _ = rt.store.cancel_run(run_id, reason=reason, outbox=outbox, fence=fence)
    if applied:
        rt.notify_outbox()
        if before is not None:
            rt.metrics.run_finished(before.blueprint_id or "-", "cancelled")
        if in_flight:
            # Revokes live only in workers' memory: the status check before user code is the guard.
            rt.port.revoke(in_flight)
    return applied


def deliver_event(
    rt: Runtime, run_id: str, name: str, *, event_id: str, payload: Any = None
) -> Delivery:
    """Deliver an event to a run; a node it wakes is dispatched."""
    delivery = rt.store.deliver_event(run_id, name, event_id=event_id, payload=payload)
    if delivery.outcome == "matched" and delivery.node_id is not None:
        run = rt.store.get_run(run_id)
        if run is not None:
            rt.dispatch(
                rt.blueprint_of(run),
                run_id,
                delivery.node_id,
                iteration=delivery.iteration,
                run_attempt=run.attempt,
            )
    return delivery


def fire_from_chord(
    rt: Runtime, run_id: str, join_id: str, iteration: int = 0, *, window: int | None = None
) -> str:
    """The chord body: try to fire the join its branches meet at (the store decides).

    With ``window`` the branches were a window of a batch's items and the join is
    its gather: the next window starts, or after the last the gather fires.
    """
    run = rt.store.get_run(run_id)
    if run is None or run.status not in RUN_ACTIVE:
        return "ignored"
    scope = RunScope(rt, run, rt.blueprint_of(run))
    if window is not None:
        from tasks.engine.batch import window_done

        return window_done(scope, join_id, iteration, window)
    if try_fire(scope, join_id, iteration, repair=False):
        return "fired"
    # A detached branch (retrying outside the chord, or on a fallback) will fire it on arrival.
    return "waiting"


def resume_node(
    rt: Runtime,
    run_id: str,
    node_id: str,
    *,
    output: Any = None,
    action: str | None = None,
    event_id: str | None = None,
) -> Delivery:
    """Resume a parked ``wait`` (or ``sleep``): it completes with ``output`` and ``action``.

    A resume is an event for the node (``resume:<node>``, or its wait's event
    name), so it is deduplicated by ``event_id`` and kept if it comes before the
    node parks. ``action`` chooses the node's edges as any result's does.

    Raises:
        ResumeError: no such run or node, or the node cannot be resumed.
    """
    run = rt.store.get_run(run_id)
    if run is None:
        return Delivery(outcome="no-run")
    if not run.snapshot:
        return Delivery(outcome="finished")
    if run.snapshot.get("kind") == "workflow":
        raise ResumeError(
            f"run {run_id!r} is a code workflow: it has no nodes to resume; send it an event "
            "(flowbridge signal) or resume its ctx.ref (kafka-workflow's protocol)"
        )
    bp = rt.blueprint_of(run)
    if node_id not in bp.node_ids:
        raise ResumeError(
            f"run {run_id!r} has no node {node_id!r} (nodes: {', '.join(bp.node_ids)})"
        )
    spec = bp.node(node_id)
    special = builtin(spec.uses)
    name = None if special is None else special.resume_event(node_id, spec.params)
    if name is None:
        raise ResumeError(
            f"node {node_id!r} ({spec.uses}) of run {run_id!r} cannot be resumed: only wait and "
            "sleep nodes park until they are resumed"
        )
    eid = RESUME_EVENT_ID + (event_id or str(uuid.uuid4()))
    payload = {"output": output, "action": action}
    return deliver_event(rt, run_id, name, event_id=eid, payload=payload)
