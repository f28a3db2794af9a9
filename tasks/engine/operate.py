"""An operator's actions on a run: pause, resume, and retry a finished run from a node.

Each is one conditional write of the store (``state.rules.operator``), so a
pause racing a node's commit, two retries at once or a retry racing a late
completion each apply once. This module decides what a retry re-runs:

- the nodes it re-runs from (``--from``; by default the failed ones, the ones a
  cancel stopped, or, for a run that completed, its start nodes), everything
  downstream of them (edges and fallbacks), and kept nodes that cannot go on by
  themselves (parked ones, whose waits ended with the run) are reset;
- every other record is kept, with its output; what a kept node that completed
  on the finished run would have written (successors, skips, join arrivals) is
  written with the retry, so nothing it decided is lost.

After a retry or a resume the run's pending nodes are dispatched, and joins
whose arrivals suffice are fired, as the reconciler would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from state.constants import (
    NODE_CANCELLED,
    NODE_COMPLETED,
    NODE_FAILED,
    NODE_PENDING,
    NODE_SKIPPED,
    NODE_WAITING,
    RUN_CANCELLED,
)
from state.records import Arrival, NodeState, Run
from tasks.blueprint import Blueprint
from tasks.builtins.batch import GATHER_USES, SCATTER_USES
from tasks.engine.graph import routing_edges, settle_stalled
from tasks.engine.routing import plan_from_taken, plan_skip
from tasks.engine.scope import RunScope
from tasks.engine.shapes import failure_is_tolerated
from tasks.errors import RetryError
from tasks.events import lifecycle_events
from tasks.runtime import Runtime

__all__ = ["RetryPlan", "dispatch_pending", "pause_run", "plan_retry", "resume_run", "retry_run"]

#: How often a retry decides again after a kept node moved under it (a late completion).
RETRY_ROUNDS = 5


@dataclass(frozen=True)
class RetryPlan:
    """What a retry writes: the store's ``retry_run`` arguments."""

    from_nodes: tuple[str, ...]
    reset: tuple[str, ...]
    pending: tuple[str, ...]
    expect: Mapping[str, str]
    skipped: tuple[str, ...] = ()
    arrivals: tuple[Arrival, ...] = field(default_factory=tuple)


def pause_run(rt: Runtime, run_id: str) -> bool:
    """Pause a runnable run: no node of it starts until it is resumed."""
    return rt.store.pause_run(run_id)


def resume_run(rt: Runtime, run_id: str) -> bool:
    """Resume a paused run and dispatch what it left pending."""
    applied = rt.store.resume_run(run_id)
    if applied:
        dispatch_pending(rt, run_id)
    return applied


def dispatch_pending(rt: Runtime, run_id: str) -> list[str]:
    """Dispatch every pending node of a live run, fire its ready joins; the nodes sent."""
    run = rt.store.get_run(run_id)
    if run is None or run.terminal or not run.snapshot:
        return []
    bp = rt.blueprint_of(run)
    recs = rt.store.get_nodes(run_id, bp.node_ids)
    scope = RunScope(rt, run, bp)
    sent = [n for n, r in recs.items() if r.status == NODE_PENDING]
    for node_id in sent:
        scope.dispatch(node_id, attempt=recs[node_id].attempts + 1)
    settle_stalled(scope, recs)
    return sent


def _downstream(bp: Blueprint, roots: Iterable[str]) -> set[str]:
    """Every node reachable from ``roots`` by edges or fallbacks (the roots excluded)."""
    fallbacks: dict[str, list[str]] = {}
    for n in bp.nodes:
        if n.config.fallback:
            fallbacks.setdefault(n.id, []).append(n.config.fallback)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        for nxt in [e.target for e in bp.analysis.successors.get(node, ())] + fallbacks.get(
            node, []
        ):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def default_from(run: Run, bp: Blueprint, recs: Mapping[str, NodeState]) -> list[str]:
    """Where a retry without ``--from`` starts: failed nodes, cancelled ones, else the start."""
    failed = [n for n in bp.node_ids if n in recs and recs[n].status == NODE_FAILED]
    if failed:
        return failed
    if run.status == RUN_CANCELLED:
        stopped = [n for n in bp.node_ids if n in recs and recs[n].status == NODE_CANCELLED]
        if stopped:
            return stopped
    return list(bp.analysis.start_nodes)


def _refuse_passes(bp: Blueprint, run_id: str, reset: set[str]) -> None:
    """Refuse a retry that would re-run a loop's passes or a batch's items.

    Their records live at other iterations and item keys that a reset of the
    blueprint's nodes does not reach; re-running them from stale records would be
    wrong, so such a run is started again instead.
    """
    looped = {n for c, loop in bp.analysis.loops.items() for n in (c, *loop.body)}
    batched = {n.id for n in bp.nodes if n.uses in (SCATTER_USES, GATHER_USES)}
    hit = sorted(reset & (looped | batched))
    if hit:
        raise RetryError(
            f"run {run_id!r}: a retry from there re-runs {hit[0]!r}, part of a "
            f"{'loop' if hit[0] in looped else 'batch'}, whose passes or items are not reset: "
            "retry from a node after it, or start the run again"
        )


def plan_retry(
    scope: RunScope, recs: Mapping[str, NodeState], from_nodes: Sequence[str] | None
) -> RetryPlan:
    """Decide what a retry of the run in ``scope`` resets, creates and expects (module doc)."""
    bp, run = scope.bp, scope.run
    chosen = list(dict.fromkeys(from_nodes)) if from_nodes else default_from(run, bp, recs)
    unknown = [n for n in chosen if n not in bp.node_ids]
    if unknown:
        raise RetryError(
            f"run {run.run_id!r} (blueprint {bp.id!r}) has no node {unknown[0]!r}; "
            f"it has: {', '.join(bp.node_ids)}"
        )
    skipped_from = [n for n in chosen if n in recs and recs[n].status == NODE_SKIPPED]
    if skipped_from:
        raise RetryError(
            f"node {skipped_from[0]!r} of run {run.run_id!r} was skipped (its edge was not "
            "taken): retry from a node before it"
        )
    below = _downstream(bp, chosen)
    # A chosen node below another chosen one is re-created by the run itself.
    roots = [n for n in chosen if not any(n in _downstream(bp, [m]) for m in chosen if m != n)]
    reset = set(chosen) | below
    _refuse_passes(bp, run.run_id, reset)
    stopped_by_run = {
        n
        for n, r in recs.items()
        if n not in reset
        and (
            r.status == NODE_WAITING
            or (r.status == NODE_CANCELLED and run.status == RUN_CANCELLED and r.error == run.error)
        )
    }
    reset |= stopped_by_run
    pending = [*roots, *sorted(stopped_by_run)]
    skipped: list[str] = []
    arrivals: list[Arrival] = []
    for node_id in bp.node_ids:
        rec = recs.get(node_id)
        if node_id in reset or rec is None:
            continue
        if rec.status == NODE_COMPLETED:
            edges = routing_edges(scope, node_id, rec.iteration)
            plan = plan_from_taken(bp, node_id, rec.iteration, edges, rec.edges_taken)
        elif rec.status == NODE_SKIPPED:
            plan = plan_skip(bp, node_id)
        elif rec.status == NODE_FAILED and failure_is_tolerated(bp, node_id):
            plan = plan_skip(bp, node_id, outcome="failed")
        else:
            continue
        pending += [n for n in plan.pending if n not in recs and n not in pending]
        skipped += [n for n in plan.skipped if n not in recs and n not in skipped]
        arrivals += list(plan.arrivals)
    kept = [n for n in bp.node_ids if n not in reset]
    return RetryPlan(
        from_nodes=tuple(roots),
        reset=tuple(n for n in bp.node_ids if n in reset and n in recs),
        pending=tuple(pending),
        expect={n: (recs[n].status if n in recs else "") for n in kept},
        skipped=tuple(skipped),
        arrivals=tuple(arrivals),
    )


def retry_run(rt: Runtime, run_id: str, from_nodes: Sequence[str] | None = None) -> int:
    """Start a finished run's next attempt from ``from_nodes``; returns the attempt.

    Raises ``RetryError`` when the run cannot be retried (no such run, not
    finished, a start that was rejected, an unknown node).
    """
    for _ in range(RETRY_ROUNDS):
        run = rt.store.get_run(run_id)
        if run is None:
            raise RetryError(f"no run {run_id!r}")
        if not run.terminal:
            raise RetryError(f"run {run_id!r} is {run.status}: only a finished run is retried")
        if not run.snapshot:
            raise RetryError(
                f"run {run_id!r} never started (its start was rejected: {run.error}); replay "
                "its DLQ record or start it again with the same run id"
            )
        bp = rt.blueprint_of(run)
        scope = RunScope(rt, run, bp)
        plan = plan_retry(scope, rt.store.get_nodes(run_id, bp.node_ids), from_nodes)
        events = lifecycle_events(
            rt.settings,
            run_id,
            "retried",
            enabled=bp.run_events,
            attempt=run.attempt + 1,
            from_nodes=list(plan.from_nodes),
        )
        # One record per attempt (a lifecycle id is stable per run and kind).
        events = [replace(e, id=f"{e.id}:{run.attempt + 1}") for e in events]
        out = rt.store.retry_run(
            run_id,
            from_nodes=plan.pending,
            reset=plan.reset,
            expect=plan.expect,
            skipped=plan.skipped,
            arrivals=plan.arrivals,
            outbox=events,
        )
        if out.applied:
            rt.notify_outbox()
            rt.metrics.run_retried(run.blueprint_id)
            dispatch_pending(rt, run_id)
            return out.attempt
        if not out.moved:
            # Someone else retried it first, or it is not finished any more.
            raise RetryError(f"run {run_id!r} is {out.status}: it was retried or resumed already")
    raise RetryError(f"run {run_id!r} kept changing while the retry was decided; try again")
