"""The reconciler: fires due timers and re-emits stalled runs' next valid jobs.

It never scans: due timers come from the store's by-due-time index, stalled
runs from its (status, time bucket) index; index rows are hints, checked
against the run row. For each stalled run it reads the frontier the store
recorded — nodes left ``pending`` or ``running`` past the threshold, joins
whose arrivals satisfy their policy but that never fired — and never
evaluates an edge condition again.

Re-emitted work goes out as ``node`` jobs on ``<prefix>flowbridge.jobs``
(outbox rows the bridge relays, so it is dispatched like any other job). Two
reconcilers may run at once: a Redis lock with an owner token per run avoids
duplicate work, and the claim on the stall (``mark_reconciled``, conditional
on the run's progress and fence) makes each stall re-emitted once even if
the lock was lost.
"""

from __future__ import annotations

import logging
import uuid

from state.constants import NODE_PENDING, NODE_RUNNING, RUN_PENDING, RUN_RUNNING
from state.errors import StaleFenceError
from state.records import OutboxMessage, Run
from tasks.engine import RunScope, settle_stalled
from tasks.engine.graph import active_iterations
from tasks.runtime import Runtime
from tasks.workflow.activation import is_workflow
from tasks.workflow.recovery import fire_workflow_timers, reconcile_workflow

__all__ = ["reconcile_once"]

log = logging.getLogger("flowbridge.reconciler")

#: Stalled runs (per status) and due timers handled in one pass.
BATCH = 500


def node_job(
    rt: Runtime, run_id: str, node_id: str, attempt: int, cause: str, iteration: int = 0
) -> OutboxMessage:
    """A ``node`` job for the jobs topic, with an id stable for one cause (a stall, a timer)."""
    value: dict[str, object] = {
        "v": 1,
        "type": "node",
        "run_id": run_id,
        "node": node_id,
        "attempt": attempt,
    }
    if iteration:
        value["iteration"] = iteration
    where = node_id if not iteration else f"{node_id}#{iteration}"
    return OutboxMessage(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowbridge:{run_id}:{where}:{cause}")),
        topic=rt.settings.topic("jobs"),
        key=run_id,
        value=value,
    )


def reconcile_once(rt: Runtime, *, now: float | None = None) -> dict[str, int]:
    """One pass; returns ``{scanned, stalled, reconciled, failed, timers}``."""
    now = rt.clock() if now is None else now
    report = {"scanned": 0, "stalled": 0, "reconciled": 0, "failed": 0, "timers": 0}
    emitted = _fire_due_timers(rt, now, report)
    report["timers"] += fire_workflow_timers(rt, now=now, limit=BATCH)
    older = now - rt.settings.stalled_after_s
    lock = rt.port.run_locks()
    for status in (RUN_PENDING, RUN_RUNNING):
        for run_id in rt.store.find_stalled(status=status, older_than=older, limit=BATCH):
            report["scanned"] += 1
            run = rt.store.get_run(run_id)
            # Index rows are hints: the run row decides.
            if run is None or run.status != status or run.updated_at >= older:
                continue
            report["stalled"] += 1
            try:
                with lock.hold(run_id) as fence:
                    if fence is None:
                        log.info("run %s: another reconciler holds it", run_id)
                        continue
                    actions = _reconcile_run(rt, run, older, fence)
            except StaleFenceError as exc:
                log.warning("run %s: %s", run_id, exc)
                report["failed"] += 1
                continue
            except Exception:
                log.exception("reconciling run %s failed", run_id)
                report["failed"] += 1
                continue
            if actions:
                report["reconciled"] += 1
                emitted = True
                log.info("run %s reconciled: %s", run_id, ", ".join(actions))
    if emitted:
        rt.notify_outbox()
    rt.metrics.reconciler_pass(report)
    return report


def _fire_due_timers(rt: Runtime, now: float, report: dict[str, int]) -> bool:
    fired = False
    for timer in rt.store.due_timers(now=now, limit=BATCH):
        job = node_job(rt, timer.run_id, timer.node_id, 1, f"timer:{timer.due_at}", timer.iteration)
        try:
            if rt.store.fire_timer(
                timer.run_id, timer.node_id, timer.iteration, now=now, outbox=[job]
            ):
                report["timers"] += 1
                fired = True
        except Exception:
            log.exception("firing timer of %s/%s failed", timer.run_id, timer.node_id)
            report["failed"] += 1
    return fired


def _reconcile_run(rt: Runtime, run: Run, older: float, fence: int) -> list[str]:
    """Re-emit one stalled run's lost jobs (once per stall), fire its joins, finish it."""
    if is_workflow(run):
        return reconcile_workflow(rt, run, fence)
    bp = rt.blueprint_of(run)
    scope = RunScope(rt, run, bp)
    recs = rt.store.get_nodes(run.run_id, bp.node_ids)
    # A loop's current passes are at iterations of their own.
    every = [*recs.values(), *(r for it in active_iterations(scope).values() for r in it.values())]
    jobs: list[OutboxMessage] = []
    for rec in every:
        if rec.updated_at >= older:
            continue
        if rec.status == NODE_PENDING:
            attempt = rec.attempts + 1
        elif rec.status == NODE_RUNNING:
            attempt = max(rec.attempts, 1)  # the same attempt: the task takes a stale node over
        else:
            continue
        cause = f"stall:{run.updated_at}"
        jobs.append(node_job(rt, run.run_id, rec.node_id, attempt, cause, rec.iteration))
    actions: list[str] = []
    if jobs and rt.store.mark_reconciled(
        run.run_id, stalled_since=run.updated_at, fence=fence, outbox=jobs
    ):
        actions.extend(f"re-emitted {j.value['node']}" for j in jobs)
    actions.extend(settle_stalled(scope, recs))
    return actions
