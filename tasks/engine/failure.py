"""A failed attempt: retry with backoff, start the fallback, arrive at a tolerant join, or fail.

The order is the blueprint's: retries first (``maxRetries`` attempts in total), then the
``fallback`` node, then a join downstream that tolerates failed branches, and
only then the run fails with the node's error.
"""

from __future__ import annotations

import math
import os
import socket

from state.constants import ARRIVAL_FAILED
from tasks.constants import MISSING_NODE_RETRY_S
from tasks.engine.graph import try_fire
from tasks.engine.routing import plan_skip
from tasks.engine.scope import Attempt, Step
from tasks.engine.shapes import failure_is_tolerated
from tasks.errors import UnknownNodeError

__all__ = ["fail", "missing_node", "requeue"]


def requeue(att: Attempt, error: str, wait_s: float) -> Step:
    """Put the node back to pending and send its next attempt after ``wait_s`` seconds."""
    scope = att.scope
    if not scope.store.retry_node(
        scope.run_id, att.node_id, att.iteration, attempt=att.number, error=error
    ):
        return Step("ignored")
    if att.chord:
        return Step("retry", retry_attempt=att.number + 1, countdown=wait_s)
    scope.dispatch(att.node_id, iteration=att.iteration, attempt=att.number + 1, countdown=wait_s)
    return Step("retry")


def fail(att: Attempt, error: str, *, retryable: bool, delay_s: float | None = None) -> Step:
    """Retry with backoff, start the fallback, arrive at a tolerant join, or fail the run."""
    scope, spec, it = att.scope, att.spec, att.iteration
    store, run_id = scope.store, scope.run_id
    cfg = spec.config
    if retryable and att.number < cfg.max_attempts:
        backoff = cfg.retry_delay_s * (2 ** (att.number - 1))
        wait = min(delay_s if delay_s is not None else backoff, scope.rt.settings.max_delay_s)
        return requeue(att, error, wait)
    reason = f"node {spec.id!r} failed after {att.number} attempt(s): {error}"
    if cfg.fallback:
        if store.fail_node(run_id, spec.id, it, error=reason, fallback=cfg.fallback):
            scope.dispatch(cfg.fallback, iteration=it)
        return Step("detached" if att.chord else "failed")
    if failure_is_tolerated(scope.bp, spec.id):
        plan = plan_skip(scope.bp, spec.id, outcome=ARRIVAL_FAILED)
        if store.fail_node(
            run_id,
            spec.id,
            it,
            error=reason,
            fail_run=False,
            skipped=plan.skipped,
            arrivals=plan.arrivals,
        ):
            for join_id in dict.fromkeys(a.join_id for a in plan.arrivals):
                try_fire(scope, join_id, it, repair=False)
        return Step("failed")
    outbox = scope.finish_outbox("failed", error=reason)
    if store.fail_node(run_id, spec.id, it, error=reason, outbox=outbox):
        scope.rt.notify_outbox()
        scope.rt.metrics.run_finished(scope.bp.id, "failed")
    return Step("failed")


def missing_node(att: Attempt, exc: UnknownNodeError, worker: str | None) -> Step:
    """Requeue a node this worker lacks for a while (another may have it), then fail it."""
    scope = att.scope
    me = worker or f"{socket.gethostname()}:{os.getpid()}"
    lacked, waited = scope.rt.port.note_missing(scope.run_id, att.node_id, att.iteration, me)
    left = scope.rt.settings.missing_node_s - waited
    if left > 0:
        return requeue(att, str(exc), min(MISSING_NODE_RETRY_S, left))
    if math.isinf(waited):
        # No other worker could have it (one process, or the wait could not be recorded).
        return fail(att, str(exc), retryable=False)
    error = (
        f"no node registered for uses {exc.uses!r} on worker(s) {', '.join(lacked)} "
        f"(requeued for {waited:.0f}s, FLOWBRIDGE_MISSING_NODE_S); register it with "
        f"@node({exc.uses!r}) in a module listed in FLOWBRIDGE_APP on every worker"
    )
    return fail(att, error, retryable=False)
