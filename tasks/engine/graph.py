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
    NODE_RUNNING,
    NODE_SKIPPED,
    RUN_ACTIVE,
    RUN_COMPLETED,
    RUN_FAILED,
)
from state.records import NodeCompletion, NodeState, RunFinish
from tasks.builtins import SCATTER_USES
from tasks.context import NodeContext
from tasks.engine.inputs import LOOP_KEY, RunData, loop_iteration
from tasks.engine.routing import Plan, edges_of, plan_completion, plan_from_taken, plan_skip
from tasks.engine.scope import Attempt, InlineBudget, RunScope, Step
from tasks.engine.shapes import chord_region, decide, losers, strategy_of
from tasks.port import task_id

__all__ = [
    "active_iterations",
    "branches",
    "complete",
    "failed_primaries",
    "inline_successor",
    "last_node_finish",
    "maybe_finish",
    "routing_edges",
    "settle",
    "settle_stalled",
    "try_fire",
]


def failed_primaries(scope: RunScope, node_id: str, iteration: int) -> tuple[str, ...]:
    """The nodes ``node_id`` is the fallback of that failed (read only if there are any)."""
    primaries = [n.id for n in scope.bp.nodes if n.config.fallback == node_id]
    if not primaries:
        return ()
    recs = scope.store.get_nodes(scope.run_id, primaries, iteration)
    return tuple(p for p in primaries if p in recs and recs[p].status == NODE_FAILED)


def routing_edges(scope: RunScope, node_id: str, iteration: int) -> Any:
    """The edges a node's result routes along (a fallback's include its failed primary's)."""
    return edges_of(scope.bp, node_id, failed_primaries(scope, node_id, iteration))


def complete(
    att: Attempt, output: Any, action: str | None, ctx: NodeContext, data: RunData
) -> Step:
    """Commit a node's completion once, then move the graph on (or tell the chord to)."""
    scope = att.scope
    edges = routing_edges(scope, att.node_id, att.iteration)
    plan = plan_completion(
        scope.bp,
        att.node_id,
        att.iteration,
        edges,
        output=output,
        action=action,
        names=data.condition_names(output, action),
    )
    if att.node_id in scope.bp.analysis.loops:
        # Where the loop is: what a node after it reads, and where a reader looks for work.
        ctx.context.set(LOOP_KEY + att.node_id, att.iteration)
    finish = None if att.chord else last_node_finish(scope, att.node_id, plan, output)
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
            pending_at=plan.pending_at,
            skipped=plan.skipped,
            arrivals=plan.arrivals,
            context_writes=dict(ctx.context.staged),
            context_deletes=tuple(sorted(ctx.context.deleted)),
            outbox=tuple(ctx.emitted),
            finish=finish,
        )
    )
    finished = finish is not None and res.applied and res.run_status == finish.status
    if res.applied and (ctx.emitted or (finished and finish is not None and finish.outbox)):
        # One hint per commit, whatever rows it wrote (the node's events, the run's end).
        scope.rt.notify_outbox()
    if finished:
        scope.rt.metrics.run_finished(scope.bp.id, RUN_COMPLETED)
    if res.run_status not in RUN_ACTIVE:
        return Step("completed" if res.applied else "duplicate")
    if not res.applied and res.node.status not in (NODE_COMPLETED, NODE_SKIPPED):
        # Cancelled meanwhile (a race's loser finishing late): record nothing, restart nothing.
        return Step("ignored")
    if att.chord and res.applied:
        # Inside a chord the branch goes on by replacing its task; the body fires the join.
        return Step("completed", next_node=plan.pending[0] if plan.pending else None)
    then = settle(
        scope,
        res.node,
        repair=not res.applied,
        plan=plan if res.applied else None,
        inline=None if att.chord else att.inline,
    )
    if res.applied:
        return Step("completed", then=then)
    return Step("detached" if att.chord else "duplicate")


def last_node_finish(scope: RunScope, node_id: str, plan: Plan, output: Any) -> RunFinish | None:
    """The run's end to commit with ``node_id``'s completion, if nothing else will be active.

    Only where ``maybe_finish``'s answer is in the node records alone: no successor,
    join arrival or next pass starts with this commit, the blueprint has no joins, loops
    or batches, and no other node is pending, running or waiting as read now. The store
    checks the last again in the commit's transaction; where it finds work, or the read
    did, or the store has no such transaction (``commits_run_end``: Scylla), the run is
    finished after the commit as before.
    """
    bp = scope.bp
    if not scope.store.commits_run_end or plan.pending or plan.pending_at or plan.arrivals:
        return None
    if bp.analysis.join_nodes or bp.analysis.loops or any(n.uses == SCATTER_USES for n in bp.nodes):
        return None
    recs = scope.store.get_nodes(scope.run_id, bp.node_ids)
    if any(r.active for n, r in recs.items() if n != node_id):
        return None
    # What maybe_finish would return: the output of each completed node that ended a path.
    result: dict[str, Any] = {}
    for n in bp.node_ids:
        if n == node_id:
            if not plan.edges_taken:
                result[n] = output
        elif (r := recs.get(n)) is not None and r.status == NODE_COMPLETED and not r.edges_taken:
            result[n] = r.output
    return RunFinish(
        status=RUN_COMPLETED,
        output=result,
        outbox=tuple(scope.finish_outbox("completed", output=result)),
    )


def inline_successor(scope: RunScope, node: NodeState, plan: Plan) -> tuple[str, int] | None:
    """The one successor a task may run itself right after ``node``'s commit, if any.

    Only the plain case: a single successor at the same iteration, no join arrival or
    batch to start, a node this worker has the function of, no timeout on either node (a
    timeout is the time limit of the node's own task), and neither the blueprint nor the
    node turned it off (``inline: false``). Everything else goes through Celery as before.
    """
    bp = scope.bp
    if not bp.inline or plan.arrivals or plan.pending_at or len(plan.pending) != 1:
        return None
    succ = plan.pending[0]
    this, spec = bp.node(node.node_id), bp.node(succ)
    if this.uses == SCATTER_USES or succ in bp.analysis.join_nodes:
        return None
    if not spec.config.inline or spec.config.timeout_s is not None:
        return None
    if this.config.timeout_s is not None or spec.uses not in scope.rt.nodes:
        return None
    return succ, node.iteration


def settle(
    scope: RunScope,
    node: NodeState,
    *,
    repair: bool,
    plan: Plan | None = None,
    inline: InlineBudget | None = None,
) -> tuple[str, int] | None:
    """After a commit (or for a duplicate): dispatch successors, fire joins, finish the run.

    With ``inline`` and budget left, a lone plain successor is not dispatched but returned:
    the caller runs it in this task (its record is already pending in the store, so a crash
    before it runs leaves it to the redelivered task's repair). For a duplicate (``repair``)
    with ``inline``, it returns the lone successor when that one has completed too: a crash
    may have left that one's successors unsent, and the caller repairs them next.
    """
    bp = scope.bp
    it = node.iteration
    if plan is None:
        if node.status == NODE_SKIPPED:
            plan = plan_skip(bp, node.node_id)
        else:
            edges = routing_edges(scope, node.node_id, it)
            plan = plan_from_taken(bp, node.node_id, it, edges, node.edges_taken)
    to_dispatch = [(n, it) for n in plan.pending] + list(plan.pending_at)
    lone = None if inline is None else inline_successor(scope, node, plan)
    if lone is not None and not repair and inline is not None and inline.allows():
        return lone
    if repair and lone is not None and inline is not None:
        rec = scope.store.get_node(scope.run_id, *lone)
        if rec is not None and (
            rec.status in (NODE_COMPLETED, NODE_SKIPPED)
            or (rec.status == NODE_RUNNING and inline.owns(rec))
        ):
            return lone
    if repair and to_dispatch:
        to_dispatch = [
            (n, at)
            for n, at in to_dispatch
            if (rec := scope.store.get_node(scope.run_id, n, at)) is not None
            and rec.status == NODE_PENDING
        ]
    region = None if repair else chord_region(bp, node.node_id)
    heads_only = [n for n, at in to_dispatch if at == it]
    if (
        region is not None
        and len(heads_only) >= 2
        and len(heads_only) == len(to_dispatch)
        and set(heads_only) <= set(region.chains)
    ):
        heads = [
            scope.rt.node_task(
                bp, scope.run_id, h, iteration=it, branch=True, run_attempt=scope.run.attempt
            )
            for h in heads_only
        ]
        scope.rt.port.dispatch_chord(heads, join_id=region.join)
    else:
        for succ, at in to_dispatch:
            scope.dispatch(succ, iteration=at)
    busy = bool(to_dispatch)
    if node.status == NODE_COMPLETED and bp.node(node.node_id).uses == SCATTER_USES:
        from tasks.engine.batch import start_items

        start_items(scope, node, repair=repair)
        busy = True
    for join_id in dict.fromkeys(a.join_id for a in plan.arrivals):
        if try_fire(scope, join_id, it, repair=repair):
            busy = True
            continue
        # Not fired now: it waits for more arrivals (the run stays open), or it fired before
        # (an ``any`` join's late branch) and may have finished: then the run may be done.
        rec = scope.store.get_node(scope.run_id, join_id, it)
        busy = busy or rec is None or rec.active
    if not busy:
        maybe_finish(scope)
    return None


def try_fire(scope: RunScope, join_id: str, iteration: int, *, repair: bool) -> bool:
    """Apply the join's strategy to its arrivals; True if this call fired, skipped or failed it."""
    store = scope.store
    decision = decide(scope.bp, join_id, store.get_arrivals(scope.run_id, join_id, iteration))
    if decision.action == "wait":
        return False
    if decision.action == "fail":
        outbox = scope.finish_outbox("failed", error=decision.reason)
        if store.finish_run(scope.run_id, status=RUN_FAILED, error=decision.reason, outbox=outbox):
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


def active_iterations(scope: RunScope) -> dict[int, dict[str, NodeState]]:
    """The records of the iterations where a loop may still have work (none without loops)."""
    loops = scope.bp.analysis.loops
    if not loops:
        return {}
    context = scope.store.get_context(scope.run_id)
    out: dict[int, dict[str, NodeState]] = {}
    for controller, loop in loops.items():
        k = loop_iteration(context, controller)
        # The controller's latest pass and the one it may have started; the body's last two.
        for at, ids in ((k, (controller, *loop.body)), (k + 1, (controller,)), (k - 1, loop.body)):
            if at <= 0:
                continue
            recs = scope.store.get_nodes(scope.run_id, ids, at)
            out.setdefault(at, {}).update(recs)
    return out


def maybe_finish(scope: RunScope) -> None:
    """Complete the run when nothing is pending, running or waiting on the paths taken."""
    store, bp = scope.store, scope.bp
    recs = store.get_nodes(scope.run_id, bp.node_ids)
    if any(r.active for r in recs.values()):
        return
    if any(r.active for it in active_iterations(scope).values() for r in it.values()):
        return
    from tasks.engine.batch import batches_open

    if batches_open(scope, recs):
        return
    for join_id in bp.analysis.join_nodes:
        # Arrivals without a join record: the join is about to fire (or be skipped).
        if join_id not in recs and store.get_arrivals(scope.run_id, join_id):
            return
    output = {
        n: r.output for n, r in recs.items() if r.status == NODE_COMPLETED and not r.edges_taken
    }
    outbox = scope.finish_outbox("completed", output=output)
    if store.finish_run(scope.run_id, status=RUN_COMPLETED, output=output, outbox=outbox):
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
    from tasks.engine.batch import gather_of, start_items

    for node_id, rec in recs.items():
        scatter = scope.bp.node(node_id).uses == SCATTER_USES
        if scatter and rec.status == NODE_COMPLETED and gather_of(scope, node_id) not in recs:
            # A batch whose window was lost (its Celery messages gone): send the first
            # unfinished window again (items already done are duplicates and run nothing).
            start_items(scope, rec, repair=True)
            actions.append(f"resent the open window of batch {node_id}")
    if not actions and not any(r.active for r in recs.values()):
        before = scope.run.status
        maybe_finish(scope)
        after = scope.store.get_run(scope.run_id)
        if after is not None and after.status != before:
            actions.append(f"finished as {after.status}")
    return actions
