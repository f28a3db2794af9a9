"""Running one node attempt, and starting and cancelling runs.

Guarantees, exactly: node code runs at least once (a redelivered or
duplicated task may run it again before the first attempt commits); the
state transitions it causes (completion, successors, join arrivals, context
writes, outbox rows, run status) apply exactly once, through the store's
conditional writes. A duplicate delivery of a completed node runs no user code:
it only re-dispatches successors that are still pending and settles joins and
the run, which repairs a crash between the commit and the dispatch.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from state.constants import (
    ARRIVAL_FAILED,
    NODE_COMPLETED,
    NODE_FAILED,
    NODE_PENDING,
    NODE_RUNNING,
    NODE_SKIPPED,
    NODE_WAITING,
    RUN_ACTIVE,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_PENDING,
    RUN_RUNNING,
    RUN_WAITING,
)
from state.models import Delivery, NodeCompletion, NodeState, Run
from tasks.blueprint import BUILTIN_USES, Blueprint, NodeSpec, parse_duration
from tasks.constants import MISSING_NODE_RETRY_S
from tasks.context import NodeContext, Result
from tasks.errors import NodeError, UnknownNodeError
from tasks.events import lifecycle_event
from tasks.flow import Plan, plan_completion, plan_from_taken, plan_skip, routing_source
from tasks.joins import chord_region, decide, failure_is_tolerated, losers
from tasks.presence import note_missing
from tasks.runtime import Runtime, task_id
from tasks.timefmt import iso_utc

__all__ = [
    "Step",
    "cancel_run",
    "deliver_event",
    "execute_node",
    "fire_from_chord",
    "settle_stalled",
    "start_run",
]

log = logging.getLogger("flowbridge.engine")

#: A wake-up call may arrive a moment before its timer's due time.
WAKE_SLACK_S = 0.5
#: How long a cancel waits for a reconciler holding the run's lock (then goes on unfenced).
CANCEL_LOCK_WAIT_S = 5.0


def _call(fn: Callable[..., Any], ctx: NodeContext) -> Any:
    if inspect.iscoroutinefunction(fn):
        return asyncio.run(fn(ctx))
    result = fn(ctx)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(aw: Any) -> Any:
    return await aw


def _check_json(what: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise NodeError(f"{what} is not JSON-serializable: {exc}", retryable=False) from exc


def start_run(
    rt: Runtime,
    bp: Blueprint,
    run_input: Any,
    *,
    run_id: str | None = None,
) -> tuple[bool, Run]:
    """Create a run of ``bp`` (idempotent on ``run_id``) and dispatch its pending start nodes."""
    run_id = run_id or str(uuid.uuid4())
    starts = bp.analysis.start_nodes
    run = Run(
        run_id=run_id,
        blueprint_id=bp.id,
        version=bp.version,
        status=RUN_PENDING,
        input=run_input,
        snapshot=bp.to_dict(),
    )
    started = lifecycle_event(
        rt.settings, run_id, "started", blueprint=bp.id, version=bp.version, input=run_input
    )
    created, stored = rt.store.create_run(run, start_nodes=starts, outbox=[started])
    if created:
        rt.hint_outbox()
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
            rt.dispatch(stored_bp, run_id, node_id, attempt=max(rec.attempts + 1, 1))
    return created, stored


def cancel_run(rt: Runtime, run_id: str, reason: str = "cancelled") -> bool:
    """Cancel a run: nothing new is dispatched; in-flight tasks are revoked (best effort)."""
    before = rt.store.get_run(run_id)
    in_flight: list[str] = []
    if before is not None and before.snapshot:
        bp = rt.blueprint_of(before)
        for rec in rt.store.get_nodes(run_id, bp.node_ids).values():
            if rec.active:
                in_flight.append(task_id(run_id, rec.node_id, rec.iteration, max(rec.attempts, 1)))
    outbox = [lifecycle_event(rt.settings, run_id, "cancelled", reason=reason)]
    # Under the run lock, with a fresh fence: a reconciler that lost its lock cannot undo it.
    with rt.run_lock().hold(run_id, wait_s=CANCEL_LOCK_WAIT_S) as fence:
        applied, _ = rt.store.cancel_run(run_id, reason=reason, outbox=outbox, fence=fence)
    if applied:
        rt.hint_outbox()
        if in_flight:
            # Revokes live only in workers' memory: the status check before user code is the guard.
            rt.app.control.revoke(in_flight, terminate=False)
    return applied


@dataclass
class Step:
    """What one node task did, and for a chord branch, what the branch does next."""

    kind: str
    #: The next node of a chord branch (the task replaces itself with it).
    next_node: str | None = None
    #: A chord branch's retry: the attempt to run next and after how long.
    retry_attempt: int | None = None
    countdown: float | None = None


def execute_node(
    rt: Runtime,
    run_id: str,
    node_id: str,
    iteration: int = 0,
    attempt: int = 1,
    *,
    redelivered: bool = False,
    chord: bool = False,
    wake: bool = False,
    worker: str | None = None,
) -> Step:
    """Run one attempt of one node if the store says it should run.

    ``redelivered`` (set by the broker when a task comes back after its worker
    was lost) lets this delivery take over a node recorded as ``running``; a
    copy that is not a redelivery leaves a running node to whoever runs it.
    With ``chord`` the task is a chord header: it does not dispatch its
    successor or retry itself but says so in the returned ``Step``, and it
    leaves firing the join to the chord body. With ``wake`` it is a short
    timer's wake-up call for a waiting node: it fires the timer if it is due.
    ``worker`` names this worker in the error of a node none of the workers had.
    """
    store = rt.store
    loaded = rt.load_run(run_id)
    if loaded is None:
        log.warning("run %s: no such run; node job %s ignored", run_id, node_id)
        return Step("no-run")
    run, cached_bp = loaded
    if run.status not in RUN_ACTIVE:
        store.append_history(
            run_id, "node.ignored", node_id=node_id, data={"reason": f"run is {run.status}"}
        )
        return Step("ignored")
    bp = cached_bp or rt.blueprint_of(run)
    if node_id not in bp.node_ids:
        store.append_history(
            run_id, "node.ignored", node_id=node_id, data={"reason": "no such node"}
        )
        return Step("ignored")
    state = store.get_node(run_id, node_id, iteration)
    if state is None:
        store.append_history(
            run_id, "node.ignored", node_id=node_id, data={"reason": "not on the frontier"}
        )
        return Step("ignored")
    if state.status in (NODE_COMPLETED, NODE_SKIPPED):
        # A redelivery of finished work: repair what may not have happened after the commit.
        _settle(rt, run, bp, state, repair=True)
        return Step("duplicate" if not chord else "detached")
    if state.status == NODE_WAITING:
        # Only a wake-up call may move it, and only when its timer is due (the store decides).
        if not (
            wake and store.fire_timer(run_id, node_id, iteration, now=rt.clock() + WAKE_SLACK_S)
        ):
            return Step("waiting")
        state = store.get_node(run_id, node_id, iteration) or state
    if state.status not in (NODE_PENDING, NODE_RUNNING):
        return Step("ignored")
    if run.status in (RUN_PENDING, RUN_WAITING):
        store.set_run_status(run_id, from_={RUN_PENDING, RUN_WAITING}, to=RUN_RUNNING)
    stale = state.updated_at < rt.clock() - rt.settings.stalled_after_s
    takeover = state.status == NODE_RUNNING and (redelivered or stale)
    began = store.begin_attempt(run_id, node_id, iteration, attempt, takeover=takeover)
    if began is None:
        # Another delivery holds it: at least once never means "concurrently twice" on purpose.
        store.append_history(run_id, "node.busy", node_id=node_id, data={"attempt": attempt})
        return Step("busy")
    spec = bp.node(node_id)
    attempt = began.attempts
    if began.deliveries > rt.settings.max_deliveries:
        error = (
            f"node {node_id!r} attempt {attempt} was delivered {began.deliveries - 1} times "
            "without finishing (its worker crashed or was killed while running it)"
        )
        return _fail(rt, run, bp, spec, iteration, attempt, error, False, None, chord=chord)
    ctx = NodeContext(
        run_id=run_id,
        node_id=node_id,
        iteration=iteration,
        attempt=attempt,
        input=run.input,
        params=spec.params,
        load_outputs=lambda: {
            n: r.output
            for n, r in store.get_nodes(run_id, bp.node_ids).items()
            if r.status == NODE_COMPLETED
        },
        load_context=lambda: store.get_context(run_id),
        load_branches=(
            (lambda: _branches(rt, run_id, bp, node_id, iteration))
            if node_id in bp.analysis.join_nodes
            else None
        ),
    )
    if spec.uses in BUILTIN_USES and spec.uses not in rt.nodes.names():
        try:
            builtin = _run_builtin(rt, run, bp, spec, iteration)
        except NodeError as exc:
            return _fail(rt, run, bp, spec, iteration, attempt, str(exc), False, None, chord=chord)
        if builtin is None:
            return Step("waiting")
        output, action = builtin
        return _complete(rt, run, bp, spec, iteration, attempt, output, action, ctx, chord=chord)
    try:
        result = _call(rt.nodes.get(spec.uses), ctx)
        output, action = (
            (result.output, result.action) if isinstance(result, Result) else (result, None)
        )
        if action is not None and not isinstance(action, str):
            raise NodeError(
                f"action must be a string, not {type(action).__name__}", retryable=False
            )
        _check_json(f"node {node_id!r} output", output)
        _check_json(f"node {node_id!r} context writes", ctx.context.staged)
        _check_json(f"node {node_id!r} emitted values", [m.value for m in ctx.emitted])
    except SoftTimeLimitExceeded:
        error = f"node {node_id!r} timed out after {spec.config.timeout_s:g}s"
        return _fail(rt, run, bp, spec, iteration, attempt, error, True, None, chord=chord)
    except NodeError as exc:
        return _fail(
            rt, run, bp, spec, iteration, attempt, str(exc), exc.retryable, exc.delay_s, chord=chord
        )
    except UnknownNodeError as exc:
        return _missing_node(rt, run, bp, spec, iteration, attempt, exc, worker, chord=chord)
    except Exception as exc:
        log.info("run %s node %s attempt %d raised", run_id, node_id, attempt, exc_info=True)
        error = f"{type(exc).__name__}: {exc}"
        return _fail(rt, run, bp, spec, iteration, attempt, error, True, None, chord=chord)
    return _complete(rt, run, bp, spec, iteration, attempt, output, action, ctx, chord=chord)


def _missing_node(
    rt: Runtime,
    run: Run,
    bp: Blueprint,
    spec: NodeSpec,
    iteration: int,
    attempt: int,
    exc: UnknownNodeError,
    worker: str | None,
    *,
    chord: bool,
) -> Step:
    """Requeue a node this worker lacks for a while (another may have it), then fail it."""
    me = worker or f"{socket.gethostname()}:{os.getpid()}"
    lacked, waited = note_missing(rt, run.run_id, spec.id, iteration, me)
    left = rt.settings.missing_node_s - waited
    if left > 0:
        wait = min(MISSING_NODE_RETRY_S, left)
        return _requeue(rt, run, bp, spec, iteration, attempt, str(exc), wait, chord=chord)
    error = (
        f"no node registered for uses {exc.uses!r} on worker(s) {', '.join(lacked)} "
        f"(requeued for {waited:.0f}s, FLOWBRIDGE_MISSING_NODE_S); register it with "
        f"@node({exc.uses!r}) in a module listed in FLOWBRIDGE_APP on every worker"
    )
    return _fail(rt, run, bp, spec, iteration, attempt, error, False, None, chord=chord)


def _requeue(
    rt: Runtime,
    run: Run,
    bp: Blueprint,
    spec: NodeSpec,
    iteration: int,
    attempt: int,
    error: str,
    wait: float,
    *,
    chord: bool,
) -> Step:
    """Put the node back to pending and send its next attempt after ``wait`` seconds."""
    if not rt.store.retry_node(run.run_id, spec.id, iteration, attempt=attempt, error=error):
        return Step("ignored")
    if chord:
        return Step("retry", retry_attempt=attempt + 1, countdown=wait)
    rt.dispatch(bp, run.run_id, spec.id, iteration=iteration, attempt=attempt + 1, countdown=wait)
    return Step("retry")


def _duration(spec: NodeSpec, name: str, *, required: bool) -> float | None:
    value = spec.params.get(name)
    if value is None:
        if required:
            raise NodeError(f"node {spec.id!r} ({spec.uses}) needs params.{name}", retryable=False)
        return None
    try:
        return parse_duration(value)
    except (TypeError, ValueError) as exc:
        raise NodeError(f"node {spec.id!r}: params.{name}: {exc}", retryable=False) from None


def _run_builtin(
    rt: Runtime, run: Run, bp: Blueprint, spec: NodeSpec, iteration: int
) -> tuple[Any, str | None] | None:
    """Run ``sleep`` or ``wait``: park the node (None) or return its output and action.

    Timers live in the state store, so a sleep of days survives restarts and is
    fired by the reconciler; one shorter than half the visibility timeout also
    gets a Celery countdown as its wake-up call, which is safe because Redis
    will not redeliver it early.
    """
    store = rt.store
    wake = store.get_wakeup(run.run_id, spec.id, iteration)
    if spec.uses == "sleep":
        duration = _duration(spec, "duration", required=True)
        assert duration is not None
        if wake is None:
            store.suspend_node(run.run_id, spec.id, iteration, due_at=rt.clock() + duration)
            _schedule_wake(rt, bp, run.run_id, spec.id, iteration, duration)
            return None
        # ISO like every other time in the run JSON (an epoch float next to them misleads).
        due_iso = None if wake.due_at is None else iso_utc(wake.due_at)
        return {"slept_s": duration, "due_at": due_iso}, None
    event = spec.params.get("event")
    if not isinstance(event, str) or not event:
        raise NodeError(f"node {spec.id!r} (wait) needs params.event, a name", retryable=False)
    timeout = _duration(spec, "timeout", required=False)
    if wake is None:
        due = None if timeout is None else rt.clock() + timeout
        wake = store.suspend_node(run.run_id, spec.id, iteration, event=event, due_at=due)
        if wake is None:
            if timeout is not None:
                _schedule_wake(rt, bp, run.run_id, spec.id, iteration, timeout)
            return None
    if wake.kind == "event":
        return wake.payload, None
    action = spec.params.get("timeoutAction", "timeout")
    return {"timed_out": True, "event": event}, str(action)


def _schedule_wake(
    rt: Runtime, bp: Blueprint, run_id: str, node_id: str, iteration: int, delay_s: float
) -> None:
    if delay_s <= rt.settings.max_delay_s:
        rt.dispatch(bp, run_id, node_id, iteration=iteration, countdown=delay_s, wake=True)


def deliver_event(
    rt: Runtime, run_id: str, name: str, *, event_id: str, payload: Any = None
) -> Delivery:
    """Deliver an event to a run; a node it wakes is dispatched."""
    delivery = rt.store.deliver_event(run_id, name, event_id=event_id, payload=payload)
    if delivery.outcome == "matched" and delivery.node_id is not None:
        run = rt.store.get_run(run_id)
        if run is not None:
            rt.dispatch(
                rt.blueprint_of(run), run_id, delivery.node_id, iteration=delivery.iteration
            )
    return delivery


def _branches(
    rt: Runtime, run_id: str, bp: Blueprint, join_id: str, iteration: int
) -> dict[str, dict[str, Any]]:
    """What each predecessor of a join brought: outcome, output, error (for all-settled)."""
    preds = bp.analysis.predecessors[join_id]
    arrivals = rt.store.get_arrivals(run_id, join_id, iteration)
    recs = rt.store.get_nodes(run_id, preds, iteration)
    out: dict[str, dict[str, Any]] = {}
    for p in preds:
        rec = recs.get(p)
        out[p] = {
            "outcome": arrivals.get(p),
            "output": rec.output if rec else None,
            "error": rec.error if rec else None,
        }
    return out


def fire_from_chord(rt: Runtime, run_id: str, join_id: str, iteration: int = 0) -> str:
    """The chord body: try to fire the join its branches meet at (the store decides)."""
    run = rt.store.get_run(run_id)
    if run is None or run.status not in RUN_ACTIVE:
        return "ignored"
    bp = rt.blueprint_of(run)
    if _try_fire(rt, run, bp, join_id, iteration, repair=False):
        return "fired"
    # A detached branch (retrying outside the chord, or on a fallback) will fire it on arrival.
    return "waiting"


def _routing_source(rt: Runtime, run: Run, bp: Blueprint, node_id: str) -> str:
    """``flow.routing_source`` with the failed primaries read from the store (only if needed)."""
    if bp.analysis.successors.get(node_id):
        return node_id
    primaries = [n.id for n in bp.nodes if n.config.fallback == node_id]
    if not primaries:
        return node_id
    recs = rt.store.get_nodes(run.run_id, primaries)
    failed = tuple(p for p in primaries if p in recs and recs[p].status == NODE_FAILED)
    return routing_source(bp, node_id, failed)


def _complete(
    rt: Runtime,
    run: Run,
    bp: Blueprint,
    spec: NodeSpec,
    iteration: int,
    attempt: int,
    output: Any,
    action: str | None,
    ctx: NodeContext,
    *,
    chord: bool,
) -> Step:
    source = _routing_source(rt, run, bp, spec.id)
    edges = bp.analysis.successors.get(source, ())
    needs_context = any(e.condition and "context" in e.condition for e in edges)
    plan = plan_completion(
        bp,
        source,
        output=output,
        action=action,
        context=ctx.context.as_dict() if needs_context else dict(ctx.context.staged),
        input=run.input,
    )
    res = rt.store.commit_node(
        NodeCompletion(
            run_id=run.run_id,
            node_id=spec.id,
            iteration=iteration,
            attempt=attempt,
            output=output,
            action=action,
            edges_taken=plan.edges_taken,
            pending=plan.pending,
            skipped=plan.skipped,
            arrivals=plan.arrivals,
            context_writes=dict(ctx.context.staged),
            outbox=tuple(ctx.emitted),
        )
    )
    if res.applied and ctx.emitted:
        rt.hint_outbox()
    if res.run_status not in RUN_ACTIVE:
        return Step("completed" if res.applied else "duplicate")
    if not res.applied and res.node.status not in (NODE_COMPLETED, NODE_SKIPPED):
        # Cancelled meanwhile (a race's loser finishing late): record nothing, restart nothing.
        return Step("ignored")
    if chord and res.applied:
        # Inside a chord the branch goes on by replacing its task; the body fires the join.
        return Step("completed", next_node=plan.pending[0] if plan.pending else None)
    _settle(rt, run, bp, res.node, repair=not res.applied, plan=plan if res.applied else None)
    return Step("completed" if res.applied else ("detached" if chord else "duplicate"))


def _settle(
    rt: Runtime,
    run: Run,
    bp: Blueprint,
    node: NodeState,
    *,
    repair: bool,
    plan: Plan | None = None,
) -> None:
    """After a commit (or for a duplicate): dispatch successors, fire joins, finish the run."""
    skipped = node.status == NODE_SKIPPED
    source = node.node_id if skipped else _routing_source(rt, run, bp, node.node_id)
    if plan is None:
        plan = plan_skip(bp, source) if skipped else plan_from_taken(bp, source, node.edges_taken)
    to_dispatch = list(plan.pending)
    if repair and to_dispatch:
        recs = rt.store.get_nodes(run.run_id, to_dispatch, node.iteration)
        to_dispatch = [n for n in to_dispatch if n in recs and recs[n].status == NODE_PENDING]
    region = None if repair else chord_region(bp, source)
    if region is not None and len(to_dispatch) >= 2 and set(to_dispatch) <= set(region.chains):
        rt.dispatch_chord(bp, run.run_id, to_dispatch, region.join, iteration=node.iteration)
    else:
        for succ in to_dispatch:
            rt.dispatch(bp, run.run_id, succ, iteration=node.iteration)
    busy = bool(to_dispatch)
    for join_id in dict.fromkeys(a.join_id for a in plan.arrivals):
        # Fired or not, a join with arrivals keeps the run open until it settles.
        _try_fire(rt, run, bp, join_id, node.iteration, repair=repair)
        busy = True
    if not busy:
        _maybe_finish(rt, run, bp)


def _try_fire(
    rt: Runtime, run: Run, bp: Blueprint, join_id: str, iteration: int, *, repair: bool
) -> bool:
    """Apply the join's policy to its arrivals; True if this call fired, skipped or failed it."""
    arrivals = rt.store.get_arrivals(run.run_id, join_id, iteration)
    decision = decide(bp, join_id, arrivals)
    if decision.action == "wait":
        return False
    if decision.action == "fail":
        event = lifecycle_event(rt.settings, run.run_id, "failed", error=decision.reason)
        if rt.store.finish_run(
            run.run_id, status=RUN_FAILED, error=decision.reason, outbox=[event]
        ):
            rt.hint_outbox()
            return True
        return False
    if not rt.store.fire_join(run.run_id, join_id, iteration):
        if repair:
            rec = rt.store.get_node(run.run_id, join_id, iteration)
            if rec is not None and rec.status == NODE_PENDING:
                rt.dispatch(bp, run.run_id, join_id, iteration=iteration)
                return True
        return False
    if decision.action == "skip":
        plan = plan_skip(bp, join_id)
        res = rt.store.commit_node(
            NodeCompletion(
                run_id=run.run_id,
                node_id=join_id,
                iteration=iteration,
                status=NODE_SKIPPED,
                skipped=plan.skipped,
                arrivals=plan.arrivals,
            )
        )
        if res.run_status in RUN_ACTIVE:
            _settle(rt, run, bp, res.node, repair=False, plan=plan)
        return True
    _cancel_losers(rt, run, bp, join_id, iteration)
    rt.dispatch(bp, run.run_id, join_id, iteration=iteration)
    return True


def _cancel_losers(rt: Runtime, run: Run, bp: Blueprint, join_id: str, iteration: int) -> None:
    """A race or quorum join fired: cancel the branches still pending or running."""
    lose = sorted(losers(bp, join_id))
    if not lose:
        return
    strategy = bp.node(join_id).config.join_strategy
    before = rt.store.get_nodes(run.run_id, lose, iteration)
    cancelled = rt.store.cancel_nodes(
        run.run_id, lose, iteration, reason=f"lost the {strategy} at join {join_id!r}"
    )
    ids = [task_id(run.run_id, n, iteration, max(before[n].attempts, 1)) for n in cancelled]
    if ids:
        # Best effort: a revoke lives in workers' memory; the store's status is the real guard.
        rt.app.control.revoke(ids, terminate=False)


def _maybe_finish(rt: Runtime, run: Run, bp: Blueprint) -> None:
    """Complete the run when nothing is pending, running or waiting on the paths taken."""
    recs = rt.store.get_nodes(run.run_id, bp.node_ids)
    if any(r.active for r in recs.values()):
        return
    for join_id in bp.analysis.join_nodes:
        # Arrivals without a join record: the join is about to fire (or be skipped).
        if join_id not in recs and rt.store.get_arrivals(run.run_id, join_id):
            return
    output = {
        n: r.output for n, r in recs.items() if r.status == NODE_COMPLETED and not r.edges_taken
    }
    event = lifecycle_event(rt.settings, run.run_id, "completed", output=output)
    if rt.store.finish_run(run.run_id, status=RUN_COMPLETED, output=output, outbox=[event]):
        rt.hint_outbox()


def _fail(
    rt: Runtime,
    run: Run,
    bp: Blueprint,
    spec: NodeSpec,
    iteration: int,
    attempt: int,
    error: str,
    retryable: bool,
    delay: float | None,
    *,
    chord: bool = False,
) -> Step:
    """Retry with backoff, start the fallback, arrive at a tolerant join, or fail the run."""
    cfg = spec.config
    if retryable and attempt <= cfg.max_retries:
        backoff = cfg.retry_delay_s * (2 ** (attempt - 1))
        wait = min(delay if delay is not None else backoff, rt.settings.max_delay_s)
        return _requeue(rt, run, bp, spec, iteration, attempt, error, wait, chord=chord)
    reason = f"node {spec.id!r} failed after {attempt} attempt(s): {error}"
    if cfg.fallback:
        if rt.store.fail_node(run.run_id, spec.id, iteration, error=reason, fallback=cfg.fallback):
            rt.dispatch(bp, run.run_id, cfg.fallback, iteration=iteration)
        return Step("detached" if chord else "failed")
    if failure_is_tolerated(bp, spec.id):
        plan = plan_skip(bp, spec.id, outcome=ARRIVAL_FAILED)
        if rt.store.fail_node(
            run.run_id,
            spec.id,
            iteration,
            error=reason,
            fail_run=False,
            skipped=plan.skipped,
            arrivals=plan.arrivals,
        ):
            for join_id in dict.fromkeys(a.join_id for a in plan.arrivals):
                _try_fire(rt, run, bp, join_id, iteration, repair=False)
        return Step("failed")
    event = lifecycle_event(rt.settings, run.run_id, "failed", error=reason)
    if rt.store.fail_node(run.run_id, spec.id, iteration, error=reason, outbox=[event]):
        rt.hint_outbox()
    return Step("failed")


def settle_stalled(rt: Runtime, run: Run, bp: Blueprint, recs: dict[str, NodeState]) -> list[str]:
    """For the reconciler: fire joins whose arrivals suffice, finish a run with nothing left."""
    actions: list[str] = []
    for join_id in bp.analysis.join_nodes:
        if join_id not in recs and _try_fire(rt, run, bp, join_id, 0, repair=True):
            actions.append(f"fired {join_id}")
    if not actions and not any(r.active for r in recs.values()):
        before = run.status
        _maybe_finish(rt, run, bp)
        after = rt.store.get_run(run.run_id)
        if after is not None and after.status != before:
            actions.append(f"finished as {after.status}")
    return actions
