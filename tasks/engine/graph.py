"""Moving a run's graph forward after a commit: successors, joins, the run's end.

Every state change here is one of the store's conditional writes, so each
caller — the task that committed, a redelivered duplicate, the chord body, the
reconciler — may try it and only one applies it. ``repair`` marks a caller
that did not make the commit itself: it re-dispatches what is still pending.
"""

from __future__ import annotations

from typing import Any

from state.constants import (
    NODE_COMPLETED,
    NODE_FAILED,
    NODE_PENDING,
    NODE_SKIPPED,
    RUN_ACTIVE,
    RUN_COMPLETED,
    RUN_FAILED,
)
from state.records import NodeCompletion, NodeState
from tasks.context import NodeContext
from tasks.engine.routing import Plan, plan_completion, plan_from_taken, plan_skip, routing_source
from tasks.engine.scope import Attempt, RunScope, Step
from tasks.engine.shapes import chord_region, decide, losers, strategy_of
from tasks.port import task_id

__all__ = ["branches", "complete", "maybe_finish", "settle", "settle_stalled", "try_fire"]


def source_of(scope: RunScope, node_id: str) -> str:
    """``routing_source`` with the failed primaries read from the store (only if needed)."""
    bp = scope.bp
    if bp.analysis.successors.get(node_id):
        return node_id
    primaries = [n.id for n in bp.nodes if n.config.fallback == node_id]
    if not primaries:
        return node_id
    recs = scope.store.get_nodes(scope.run_id, primaries)
    failed = tuple(p for p in primaries if p in recs and recs[p].status == NODE_FAILED)
    return routing_source(bp, node_id, failed)


def complete(att: Attempt, output: Any, action: str | None, ctx: NodeContext) -> Step:
    """Commit a node's completion once, then move the graph on (or tell the chord to)."""
    scope = att.scope
    source = source_of(scope, att.node_id)
    edges = scope.bp.analysis.successors.get(source, ())
    needs_context = any(e.condition and "context" in e.condition for e in edges)
    plan = plan_completion(
        scope.bp,
        source,
        output=output,
        action=action,
        context=ctx.context.as_dict() if needs_context else dict(ctx.context.staged),
        input=scope.run.input,
    )
    res = scope.store.commit_node(
        NodeCompletion(
            run_id=scope.run_id,
            node_id=att.node_id,
            iteration=att.iteration,
            attempt=att.number,
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
        scope.rt.notify_outbox()
    if res.run_status not in RUN_ACTIVE:
        return Step("completed" if res.applied else "duplicate")
    if not res.applied and res.node.status not in (NODE_COMPLETED, NODE_SKIPPED):
        # Cancelled meanwhile (a race's loser finishing late): record nothing, restart nothing.
        return Step("ignored")
    if att.chord and res.applied:
        # Inside a chord the branch goes on by replacing its task; the body fires the join.
        return Step("completed", next_node=plan.pending[0] if plan.pending else None)
    settle(scope, res.node, repair=not res.applied, plan=plan if res.applied else None)
    return Step("completed" if res.applied else ("detached" if att.chord else "duplicate"))


def settle(scope: RunScope, node: NodeState, *, repair: bool, plan: Plan | None = None) -> None:
    """After a commit (or for a duplicate): dispatch successors, fire joins, finish the run."""
    bp = scope.bp
    skipped = node.status == NODE_SKIPPED
    source = node.node_id if skipped else source_of(scope, node.node_id)
    if plan is None:
        plan = plan_skip(bp, source) if skipped else plan_from_taken(bp, source, node.edges_taken)
    to_dispatch = list(plan.pending)
    if repair and to_dispatch:
        recs = scope.store.get_nodes(scope.run_id, to_dispatch, node.iteration)
        to_dispatch = [n for n in to_dispatch if n in recs and recs[n].status == NODE_PENDING]
    region = None if repair else chord_region(bp, source)
    if region is not None and len(to_dispatch) >= 2 and set(to_dispatch) <= set(region.chains):
        heads = [
            scope.rt.node_task(
                bp,
                scope.run_id,
                h,
                iteration=node.iteration,
                branch=True,
                run_attempt=scope.run.attempt,
            )
            for h in to_dispatch
        ]
        scope.rt.port.dispatch_chord(heads, join_id=region.join)
    else:
        for succ in to_dispatch:
            scope.dispatch(succ, iteration=node.iteration)
    busy = bool(to_dispatch)
    for join_id in dict.fromkeys(a.join_id for a in plan.arrivals):
        # Fired or not, a join with arrivals keeps the run open until it settles.
        try_fire(scope, join_id, node.iteration, repair=repair)
        busy = True
    if not busy:
        maybe_finish(scope)


def try_fire(scope: RunScope, join_id: str, iteration: int, *, repair: bool) -> bool:
    """Apply the join's strategy to its arrivals; True if this call fired, skipped or failed it."""
    store = scope.store
    decision = decide(scope.bp, join_id, store.get_arrivals(scope.run_id, join_id, iteration))
    if decision.action == "wait":
        return False
    if decision.action == "fail":
        event = scope.lifecycle("failed", error=decision.reason)
        if store.finish_run(scope.run_id, status=RUN_FAILED, error=decision.reason, outbox=[event]):
            scope.rt.notify_outbox()
            scope.rt.metrics.run_finished(scope.bp.id, RUN_FAILED)
            return True
        return False
    fired = store.fire_join(scope.run_id, join_id, iteration)
    if fired:
        scope.rt.metrics.join_fired(scope.bp.id, join_id)
    if not fired:
        if repair:
            rec = store.get_node(scope.run_id, join_id, iteration)
            if rec is not None and rec.status == NODE_PENDING:
                scope.dispatch(join_id, iteration=iteration)
                return True
        return False
    if decision.action == "skip":
        plan = plan_skip(scope.bp, join_id)
        res = store.commit_node(
            NodeCompletion(
                run_id=scope.run_id,
                node_id=join_id,
                iteration=iteration,
                status=NODE_SKIPPED,
                skipped=plan.skipped,
                arrivals=plan.arrivals,
            )
        )
        if res.run_status in RUN_ACTIVE:
            settle(scope, res.node, repair=False, plan=plan)
        return True
    _cancel_losers(scope, join_id, iteration)
    scope.dispatch(join_id, iteration=iteration)
    return True


def _cancel_losers(scope: RunScope, join_id: str, iteration: int) -> None:
    """A join that cancels losers fired: cancel the branches still pending or running."""
    lose = sorted(losers(scope.bp, join_id))
    if not lose:
        return
    name = strategy_of(scope.bp, join_id).name
    before = scope.store.get_nodes(scope.run_id, lose, iteration)
    cancelled = scope.store.cancel_nodes(
        scope.run_id, lose, iteration, reason=f"lost the {name} at join {join_id!r}"
    )
    ids = [
        task_id(scope.run_id, n, iteration, max(before[n].attempts, 1), scope.run.attempt)
        for n in cancelled
    ]
    if ids:
        # Best effort: a revoke lives in workers' memory; the store's status is the real guard.
        scope.rt.port.revoke(ids)


def maybe_finish(scope: RunScope) -> None:
    """Complete the run when nothing is pending, running or waiting on the paths taken."""
    store, bp = scope.store, scope.bp
    recs = store.get_nodes(scope.run_id, bp.node_ids)
    if any(r.active for r in recs.values()):
        return
    for join_id in bp.analysis.join_nodes:
        # Arrivals without a join record: the join is about to fire (or be skipped).
        if join_id not in recs and store.get_arrivals(scope.run_id, join_id):
            return
    output = {
        n: r.output for n, r in recs.items() if r.status == NODE_COMPLETED and not r.edges_taken
    }
    event = scope.lifecycle("completed", output=output)
    if store.finish_run(scope.run_id, status=RUN_COMPLETED, output=output, outbox=[event]):
        scope.rt.notify_outbox()
        scope.rt.metrics.run_finished(bp.id, RUN_COMPLETED)


def branches(scope: RunScope, join_id: str, iteration: int) -> dict[str, dict[str, Any]]:
    """What each predecessor of a join brought: outcome, output, error (for all-settled)."""
    preds = scope.bp.analysis.predecessors[join_id]
    arrivals = scope.store.get_arrivals(scope.run_id, join_id, iteration)
    recs = scope.store.get_nodes(scope.run_id, preds, iteration)
    out: dict[str, dict[str, Any]] = {}
    for p in preds:
        rec = recs.get(p)
        out[p] = {
            "outcome": arrivals.get(p),
            "output": rec.output if rec else None,
            "error": rec.error if rec else None,
        }
    return out


def settle_stalled(scope: RunScope, recs: dict[str, NodeState]) -> list[str]:
    """For the reconciler: fire joins whose arrivals suffice, finish a run with nothing left."""
    actions: list[str] = []
    for join_id in scope.bp.analysis.join_nodes:
        if join_id not in recs and try_fire(scope, join_id, 0, repair=True):
            actions.append(f"fired {join_id}")
    if not actions and not any(r.active for r in recs.values()):
        before = scope.run.status
        maybe_finish(scope)
        after = scope.store.get_run(scope.run_id)
        if after is not None and after.status != before:
            actions.append(f"finished as {after.status}")
    return actions
