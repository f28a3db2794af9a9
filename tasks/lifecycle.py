"""A run's life, whatever runs it: start by name, cancel, events and refs, for both kinds.

Blueprint runs are the engine's (``tasks.engine``), code workflow runs the
workflow interpreter's (``tasks.workflow``); the bridge, the client and the
reconciler call these functions and never need to know which kind a run is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from state.records import RUN_ACTIVE, Delivery, DeliveryOutcome, Run
from tasks.engine import cancel_run as cancel_blueprint_run
from tasks.engine import deliver_event as deliver_blueprint_event
from tasks.engine import dispatch_pending, retry_run
from tasks.engine import start_run as start_blueprint_run
from tasks.errors import WORKFLOW_RETRY, RetryError, UnknownBlueprintError
from tasks.port import ActivationTask
from tasks.runtime import Runtime
from tasks.workflow.activation import deliver, is_workflow, start_workflow
from tasks.workflow.api import workflows
from tasks.workflow.dispatch import outstanding_activities
from tasks.workflow.history import Activation, Input

__all__ = ["cancel", "deliver_event", "pause", "resume_ref", "retry", "start", "unpause"]

log = logging.getLogger("flowbridge.runs")


def start(
    rt: Runtime,
    name: str,
    run_input: Any,
    *,
    run_id: str,
    version: str | None = None,
    protocol: str | None = None,
) -> tuple[bool, Run]:
    """Start a run of blueprint or workflow ``name`` (idempotent on ``run_id``).

    ``protocol`` is how a workflow was started (``"kafka-workflow"``: it answers on
    that protocol's result and error topics too).

    Raises:
        UnknownBlueprintError: neither a blueprint nor a workflow has that name.
    """
    try:
        bp = rt.blueprints.get(name, version)
    except UnknownBlueprintError as missing:
        defn = workflows.get(
            name, int(version) if version is not None and version.isdigit() else None
        )
        if defn is None:
            known = [*missing.known, *(f"{w} (workflow)" for w in workflows.names())]
            raise UnknownBlueprintError(name, version, known) from None
        return start_workflow(rt, defn, run_input, run_id=run_id, protocol=protocol)
    return start_blueprint_run(rt, bp, run_input, run_id=run_id)


def cancel(rt: Runtime, run_id: str, reason: str = "cancelled", *, force: bool = False) -> bool:
    """Cancel a run: a workflow gets one ``CancelledError`` (``force``: ends it without code)."""
    run = rt.store.get_run(run_id)
    if run is None or not is_workflow(run):
        return cancel_blueprint_run(rt, run_id, reason)
    if run.status not in RUN_ACTIVE:
        return False
    if force:
        state = rt.store.workflows.load(run_id)
        applied, _ = rt.store.cancel_run(run_id, reason=reason)
        if applied and state is not None:
            history = [Activation.from_json(a) for a in state.history]
            ids = [f"{run_id}:{state.gen}:{c.seq}:1" for c in outstanding_activities(history)]
            if ids:
                rt.port.revoke(ids, terminate=True)
        return applied
    return deliver(rt, run_id, Input(key="x:cancel", type="cancel", value=reason))


def deliver_event(
    rt: Runtime, run_id: str, name: str, *, event_id: str, payload: Any = None
) -> Delivery:
    """Deliver an event: to the waiting node of a blueprint run, or a workflow's mailbox."""
    run = rt.store.get_run(run_id)
    if run is None or not is_workflow(run):
        return deliver_blueprint_event(rt, run_id, name, event_id=event_id, payload=payload)
    if run.status not in RUN_ACTIVE:
        return Delivery(outcome=DeliveryOutcome.FINISHED)
    item = Input(key=f"e:{event_id}", type="event", name=name, value=payload)
    new = deliver(rt, run_id, item)
    return Delivery(outcome=DeliveryOutcome.STORED if new else DeliveryOutcome.DUPLICATE)


def resume_ref(
    rt: Runtime, run_id: str, ref_id: str, *, key: str, value: Any = None, error: Any = None
) -> Delivery:
    """Resume ``ctx.ref(ref_id)`` of a workflow run with a value or an error (once per key).

    ``key`` names the delivery (kafka-workflow's messages: topic, partition and
    offset), not the ref: a named ref is awaited again and again.
    """
    run = rt.store.get_run(run_id, snapshot=True)
    if run is None:
        return Delivery(outcome=DeliveryOutcome.NO_RUN)
    if not is_workflow(run) or run.status not in RUN_ACTIVE:
        return Delivery(outcome=DeliveryOutcome.FINISHED)
    item = Input(key=f"ref:{key}", type="ref", id=ref_id, value=value, error=error)
    new = deliver(rt, run_id, item)
    return Delivery(outcome=DeliveryOutcome.STORED if new else DeliveryOutcome.DUPLICATE)


def pause(rt: Runtime, run_id: str) -> bool:
    """Pause a runnable run: no node (or workflow activation) starts until it is resumed.

    What is in flight finishes: a running node commits, an activity's outcome waits
    in the workflow's inbox.
    """
    return rt.store.pause_run(run_id)


def unpause(rt: Runtime, run_id: str) -> bool:
    """Resume a paused run: dispatch what it left pending, or activate the workflow."""
    applied = rt.store.resume_run(run_id)
    if not applied:
        return False
    run = rt.store.get_run(run_id)
    if run is not None and is_workflow(run):
        rt.port.dispatch_activation(
            ActivationTask(run_id=run_id, time_limit_s=rt.settings.activation_cpu_s)
        )
    else:
        dispatch_pending(rt, run_id)
    return True


def retry(rt: Runtime, run_id: str, from_nodes: Sequence[str] | None = None) -> int:
    """Retry a finished blueprint run from ``from_nodes``; its new attempt.

    Raises:
        RetryError: the run cannot be retried (a code workflow run is never: see
            ``WORKFLOW_RETRY``).
    """
    run = rt.store.get_run(run_id)
    if run is not None and is_workflow(run):
        raise RetryError(WORKFLOW_RETRY.format(run_id=run_id))
    return retry_run(rt, run_id, from_nodes)
