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

``check_dispatch`` is the quick half, on a schedule of its own
(``FLOWBRIDGE_DISPATCH_DEADLINE_S``): the port names the node tasks that left
their queue and reached no live worker, or that a dead worker left
unacknowledged (``TaskPort.find_lost``); each whose node is still ``pending``
is sent again (a lost one) or put back at the head of its queue (an orphaned
one), under the same lock and claim. Its cost follows the tasks in flight,
never the number of runs.
"""

from __future__ import annotations

import logging
import uuid

from state.constants import (
    NODE_COMPLETED,
    NODE_PENDING,
    NODE_RUNNING,
    RUN_ACTIVE,
    RUN_PENDING,
    RUN_RUNNING,
)
from state.errors import StaleFenceError
from state.history import HistoryKind
from state.records import NodeState, OutboxMessage, Run
from state.rules import leases as lease_rules
from tasks.engine import RunScope, settle_stalled
from tasks.engine.graph import active_iterations
from tasks.port import ORPHANED, LostTask
from tasks.runtime import Runtime
from tasks.workflow.activation import is_workflow
from tasks.workflow.recovery import fire_workflow_timers, reconcile_workflow

__all__ = ["check_dispatch", "reconcile_once"]

log = logging.getLogger("flowbridge.reconciler")

#: Stalled runs (per status) and due timers handled in one pass.
BATCH = 500
#: Batches of expired runs one pass deletes at most: a pass stays short, and purges up to
#: 10,000 runs per interval (330 finished runs/s at the default 30 s) to keep up with.
PURGE_BATCHES = 20


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
    """One pass; returns ``{scanned, stalled, reconciled, failed, timers, purged}``."""
    now = rt.clock() if now is None else now
    report = {"scanned": 0, "stalled": 0, "reconciled": 0, "failed": 0, "timers": 0}
    emitted = _fire_due_timers(rt, now, report)
    report["timers"] += fire_workflow_timers(rt, now=now, limit=BATCH)
    older = now - rt.settings.stalled_after_s
    # A lease's renewals are not run progress, so a node whose worker died is found by the
    # run's own idleness: the runs idle for a lease already (not stalled_after_s) are read,
    # and one of them is stalled only if a node's lease lapsed (``_reconcile_run``).
    early = max(older, now - rt.settings.lease_s) if rt.settings.lease_s else older
    emitted = _recover_emptied_queues(rt, report) or emitted
    lock = rt.port.run_locks()
    for status in (RUN_PENDING, RUN_RUNNING):
        for run_id in rt.store.find_stalled(status=status, older_than=early, limit=BATCH):
            report["scanned"] += 1
            run = rt.store.get_run(run_id)
            # Index rows are hints: the run row decides.
            if run is None or run.status != status or run.updated_at >= early:
                continue
            if run.updated_at >= older and (is_workflow(run) or not _lapsed(rt, run, now)):
                # Activities hold no lease: a code workflow waits stalled_after_s. A run whose
                # leases all hold is left without taking its lock (which writes its fence).
                continue
            try:
                with lock.hold(run_id) as fence:
                    if fence is None:
                        log.info("run %s: another reconciler holds it", run_id)
                        report["stalled"] += 1
                        continue
                    stalled, actions = _reconcile_run(rt, run, older, fence, now)
                    report["stalled"] += stalled
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
    report["purged"] = _purge_expired(rt)
    report.update(check_dispatch(rt))
    rt.metrics.reconciler_pass(report)
    return report


def _purge_expired(rt: Runtime) -> int:
    """Delete finished runs past retention (``FLOWBRIDGE_RETENTION_DAYS``); returns how many.

    Scylla expires them by TTL (its ``purge_expired`` returns 0); SQLite has no TTL, so
    without this pass its finished runs would be kept forever.
    """
    purged = 0
    for _ in range(PURGE_BATCHES):
        done = rt.store.purge_expired(limit=BATCH)
        purged += done
        if done < BATCH:
            break
    if purged:
        log.info("purged %d finished runs past retention", purged)
    return purged


def check_dispatch(rt: Runtime) -> dict[str, int]:
    """Send again the node tasks lost or orphaned on the way to a worker; returns the counts.

    ``{lost, orphaned, redispatched, requeued}``: found lost (they left their queue and
    no live worker has them), found orphaned (a dead worker's unacknowledged messages),
    sent again, and put back at the head of their queue.
    """
    report = {"lost": 0, "orphaned": 0, "redispatched": 0, "requeued": 0}
    if not rt.settings.dispatch_deadline_s:
        return report
    try:
        found = rt.port.find_lost(deadline_s=rt.settings.dispatch_deadline_s, limit=BATCH)
    except Exception:
        log.exception("looking for lost node tasks failed")
        return report
    by_run: dict[str, list[LostTask]] = {}
    for task in found:
        by_run.setdefault(task.run_id, []).append(task)
    lock = rt.port.run_locks()
    for run_id, tasks in by_run.items():
        try:
            with lock.hold(run_id) as fence:
                if fence is None:
                    continue  # a reconciler holds it: it will find them on its next pass
                _recover(rt, run_id, tasks, fence, report)
        except StaleFenceError as exc:
            log.warning("run %s: %s", run_id, exc)
        except Exception:
            log.exception("recovering lost node tasks of run %s failed", run_id)
    rt.metrics.dispatch_check(report)
    return report


def _recover(
    rt: Runtime, run_id: str, tasks: list[LostTask], fence: int, report: dict[str, int]
) -> None:
    """Under the run's lock: send again each lost task its node waits for; requeue orphans.

    A lost task is sent again (the same attempt) only while its node is ``pending``;
    otherwise it was received after all and its record is dropped. An orphaned one
    always goes back to its queue, as kombu would put it back after the visibility
    timeout: as a redelivery when its node is ``running`` (the dead worker's pool
    process died with it, so the delivery takes the node over) or ``completed`` (the
    delivery re-sends successors the dead worker may not have sent, and takes over
    the one it was running inline).
    """
    # Read under the lock: a reconciler that held it before may have recovered them already.
    tasks = [t for t in tasks if rt.port.still_lost(t)]
    run = rt.store.get_run(run_id)
    if run is None or run.status not in RUN_ACTIVE or is_workflow(run):
        for task in tasks:
            if task.why == ORPHANED:
                rt.port.requeue(task)  # its delivery finds the run finished and is acked
            else:
                rt.port.forget(task)
        return
    bp = rt.blueprint_of(run)
    todo: list[tuple[LostTask, NodeState | None]] = []
    for task in tasks:
        rec = (
            rt.store.get_node(run_id, task.node_id, task.iteration)
            if task.node_id in bp.node_ids
            else None
        )
        if task.why == ORPHANED or (rec is not None and rec.status == NODE_PENDING):
            todo.append((task, rec))
        else:
            # Received after all (its receipt was recorded late), or the run moved on.
            rt.port.forget(task)
    # The claim makes it once per stall even if this holder lost its lock meanwhile.
    if not todo or not rt.store.mark_reconciled(run_id, stalled_since=run.updated_at, fence=fence):
        return
    for task, rec in todo:
        report[task.why] += 1
        status = rec.status if rec is not None else None
        attempt = (rec.attempts if rec is not None else 0) + (status == NODE_PENDING)
        if task.why == ORPHANED:
            # As a redelivery when it ran: its node (or, for a completed node, the successor
            # it was running inline, claimed under its task id) is the delivery's to take over.
            if not rt.port.requeue(task, takeover=status in (NODE_RUNNING, NODE_COMPLETED)):
                continue  # kombu's own restore (or a clean stop) put it back meanwhile
            how = "requeued"
        else:
            rt.dispatch(bp, run_id, task.node_id, iteration=task.iteration, attempt=attempt)
            how = "redispatched"
        report[how] += 1
        rt.store.append_history(
            run_id,
            HistoryKind.NODE_REDISPATCHED,
            node_id=task.node_id,
            data={"why": task.why, "how": how, "status": status, "sent_at": task.sent_at},
        )
        log.warning(
            "run %s: the task of node %s (%s) was %s %.1fs after it was sent; %s",
            run_id,
            task.node_id,
            status,
            task.why,
            rt.clock() - rt.settings.clock_offset_s - task.sent_at,
            how,
        )


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


#: Attempts at one run's claim in the sweep after an emptied Redis (its nodes keep moving).
EMPTIED_CLAIMS = 5


def _recover_emptied_queues(rt: Runtime, report: dict[str, int]) -> bool:
    """After Redis restarted empty: re-emit each active run's nodes last touched before.

    Their tasks, and the sent records the dispatch check reads, went with Redis; the
    stall threshold alone would find them only after ``FLOWBRIDGE_STALLED_AFTER_S``,
    and never in a run whose other branches keep it moving. Every active run is read
    once (this happens once per Redis restart); a running node whose lease holds is
    left to its worker, one whose lease lapsed is taken over.
    """
    try:
        ago = rt.port.queues_emptied_ago()
    except Exception:
        log.exception("checking whether Redis restarted empty failed")
        return False
    if ago is None:
        return False
    since = rt.clock() - ago  # in the store's clock, which stamps the nodes
    log.warning("Redis restarted empty at %.3f: re-emitting the nodes of active runs", since)
    lock = rt.port.run_locks()
    emitted = 0
    for status in (RUN_PENDING, RUN_RUNNING):
        for run_id in rt.store.find_stalled(status=status, older_than=rt.clock(), limit=10**6):
            try:
                with lock.hold(run_id) as fence:
                    if fence is not None:
                        emitted += _reemit_older(rt, run_id, since, fence)
            except Exception:
                log.exception("re-emitting run %s after Redis restarted empty failed", run_id)
                report["failed"] += 1
    report["reconciled"] += emitted
    return emitted > 0


def _reemit_older(rt: Runtime, run_id: str, since: float, fence: int) -> int:
    """Re-emit ``run_id``'s nodes older than ``since``; retries a claim its progress beat."""
    for _ in range(EMPTIED_CLAIMS):
        run = rt.store.get_run(run_id)
        # Code workflows are left to the stall threshold (their activations differ).
        if run is None or run.status not in RUN_ACTIVE or is_workflow(run):
            return 0
        if _reconciled_since(rt, run_id, since):
            # Another reconciler's stall pass re-emitted it since Redis came back: its jobs
            # went into the new Redis, and emitting them again would re-emit one loss twice.
            return 0
        now = rt.clock()
        stale = any(
            rec.status in (NODE_PENDING, NODE_RUNNING)
            and lease_rules.stalled(rec, now=now, older_than=since)
            for rec in _records(rt, run)[2]
        )
        # Without stale nodes it may still hold a join whose arrivals are in (the chord
        # counter that would have fired it was in Redis): settling fires it.
        _, actions = _reconcile_run(rt, run, since, fence, now, emptied=True)
        if actions:
            log.info("run %s after Redis restarted empty: %s", run_id, ", ".join(actions))
        if not stale or any(a.startswith("re-emitted") for a in actions):
            return int(bool(actions))
    log.warning(
        "run %s: its progress beat %d claims; the stall will find it", run_id, EMPTIED_CLAIMS
    )
    return 0


def _reconciled_since(rt: Runtime, run_id: str, since: float) -> bool:
    """Whether a stall claim (``run.reconciled``) of the run was recorded at or after ``since``."""
    return any(
        e.kind == HistoryKind.RUN_RECONCILED and e.at >= since
        for e in reversed(rt.store.get_history(run_id))
    )


def _lapse_claimed(rt: Runtime, run_id: str, rec: NodeState, claims: list[float]) -> bool:
    """Whether a stall claim of the run came after ``rec``'s lease lapsed (``claims`` caches)."""
    if not claims:
        claims.extend(
            e.at for e in rt.store.get_history(run_id) if e.kind == HistoryKind.RUN_RECONCILED
        )
        claims.append(float("-inf"))  # read: an empty history is not read again
    return rec.lease_until is not None and max(claims) >= rec.lease_until


def _records(rt: Runtime, run: Run) -> tuple[RunScope, dict[str, NodeState], list[NodeState]]:
    """The run's node records: at iteration 0 by id, and with a loop's current passes."""
    bp = rt.blueprint_of(run)
    scope = RunScope(rt, run, bp)
    recs = rt.store.get_nodes(run.run_id, bp.node_ids)
    # A loop's current passes are at iterations of their own.
    every = [*recs.values(), *(r for it in active_iterations(scope).values() for r in it.values())]
    return scope, recs, every


def _lapsed(rt: Runtime, run: Run, now: float) -> bool:
    """Whether a running node of the run has a lease that expired (read before the lock)."""
    return any(lease_rules.expired(rec, now=now) for rec in _records(rt, run)[2])


def _reconcile_run(
    rt: Runtime, run: Run, older: float, fence: int, now: float, *, emptied: bool = False
) -> tuple[bool, list[str]]:
    """Re-emit one stalled run's lost jobs (once per stall), fire its joins, finish it.

    Returns whether the run was stalled, and what was done. A run idle for less
    than ``stalled_after_s`` (read because a lease may have lapsed) is stalled
    only when a running node's lease expired; then only those nodes are re-emitted.
    One idle for longer whose only stalled-looking node holds a live lease is not stalled.
    ``emptied``: ``older`` is when Redis restarted empty, and a run that moved since is
    read as one idle since (its nodes from before lost their tasks all the same).
    """
    if is_workflow(run):
        return True, reconcile_workflow(rt, run, fence)
    scope, recs, every = _records(rt, run)
    early = run.updated_at >= older and not emptied
    jobs: list[OutboxMessage] = []
    claims: list[float] = []  # when the run's stalls were claimed (read once, if needed)
    held = False  # a node's live lease vouches for the run: it is not stalled, only slow
    for rec in every:
        held = held or (lease_rules.leased(rec) and not lease_rules.expired(rec, now=now))
        # A live lease keeps a running node however old; a lapsed one gives it up at once.
        if not lease_rules.stalled(rec, now=now, older_than=older):
            continue
        if early and not lease_rules.expired(rec, now=now):
            continue
        if early and _lapse_claimed(rt, run.run_id, rec, claims):
            # This lapse was re-emitted already (by another reconciler, or an earlier pass):
            # a worker takes that job over; if it is lost too, the stall threshold finds it.
            continue
        if rec.status == NODE_PENDING:
            attempt = rec.attempts + 1
        elif rec.status == NODE_RUNNING:
            attempt = max(rec.attempts, 1)  # the same attempt: the task takes a stale node over
        else:
            continue
        cause = f"stall:{run.updated_at}"
        jobs.append(node_job(rt, run.run_id, rec.node_id, attempt, cause, rec.iteration))
    if early and not jobs:
        return False, []
    actions: list[str] = []
    if jobs and rt.store.mark_reconciled(
        run.run_id, stalled_since=run.updated_at, fence=fence, outbox=jobs
    ):
        actions.extend(f"re-emitted {j.value['node']}" for j in jobs)
    if not early:
        actions.extend(settle_stalled(scope, recs))
    return bool(jobs) or not held, actions
