"""One node attempt: read what the store says, claim the node, run it, classify, commit.

Guarantees, exactly: node code runs at least once (a redelivered or
duplicated task may run it again before the first attempt commits); the
state transitions it causes (completion, successors, join arrivals, context
writes, outbox rows, run status) apply exactly once, through the store's
conditional writes. A duplicate delivery of a completed node runs no user code:
it only re-dispatches successors that are still pending and settles joins and
the run, which repairs a crash between the commit and the dispatch.
"""

from __future__ import annotations

import logging
import time

from state.constants import (
    NODE_COMPLETED,
    NODE_PENDING,
    NODE_RUNNING,
    NODE_SKIPPED,
    NODE_WAITING,
    RUN_ACTIVE,
    RUN_PAUSED,
    RUN_PENDING,
    RUN_WAITING,
)
from state.records import NodeState
from state.rules import leases as lease_rules
from tasks.builtins import Builtin, builtin
from tasks.context import NodeContext, RunContext
from tasks.engine.batch import execute_item, resolve_ref
from tasks.engine.calls import EngineCall
from tasks.engine.failure import fail, missing_node
from tasks.engine.graph import branches, complete, settle
from tasks.engine.inputs import RunData
from tasks.engine.outcome import Done, Failed, call_node
from tasks.engine.scope import Attempt, InlineBudget, RunScope, Step
from tasks.errors import NodeError
from tasks.leases import begin_leased, held
from tasks.runtime import Runtime

__all__ = ["execute_node"]

log = logging.getLogger("flowbridge.engine")

#: A wake-up call may arrive a moment before its timer's due time.
WAKE_SLACK_S = 0.5


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
    item: int | None = None,
    inline: InlineBudget | None = None,
    claim: str | None = None,
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
    ``item`` makes it one item of the batch of the scatter ``node_id``. With ``inline``
    the returned ``Step.then`` may name the successor for this task to run next itself.
    ``claim`` (``tasks.leases.identity``) claims the attempt with a lease renewed while
    it runs.
    """
    store = rt.store
    state: NodeState | None = None
    if item is None:
        # The run and the node record in one read (a batch item reads its own records).
        task = rt.load_task(run_id, node_id, iteration)
        loaded = None if task is None else (task[0], task[1])
        state = None if task is None else task[2]
    else:
        loaded = rt.load_run(run_id)
    if loaded is None:
        log.warning("run %s: no such run; node job %s ignored", run_id, node_id)
        return Step("no-run")
    run, cached_bp = loaded

    def ignored(reason: str) -> Step:
        store.append_history(run_id, "node.ignored", node_id=node_id, data={"reason": reason})
        return Step("ignored")

    if run.status not in RUN_ACTIVE:
        return ignored(f"run is {run.status}")
    if run.status == RUN_PAUSED:
        # Left pending (or parked, or running in another delivery): resume dispatches it.
        return ignored("run is paused")
    scope = RunScope(rt, run, cached_bp or rt.blueprint_of(run))
    if node_id not in scope.bp.node_ids:
        return ignored("no such node")
    if item is not None:
        return execute_item(
            scope,
            node_id,
            iteration,
            item,
            attempt,
            chord=chord,
            redelivered=redelivered,
            claim=claim,
        )
    if state is None:
        return ignored("not on the frontier")
    if state.status in (NODE_COMPLETED, NODE_SKIPPED):
        # A redelivery of finished work: repair what may not have happened after the commit.
        then = settle(scope, state, repair=True, inline=None if chord else inline)
        return Step("duplicate", then=then) if not chord else Step("detached")
    if state.status == NODE_WAITING:
        # Only a wake-up call may move it, and only when its timer is due (the store decides).
        if not (
            wake and store.fire_timer(run_id, node_id, iteration, now=rt.clock() + WAKE_SLACK_S)
        ):
            return Step("waiting")
        state = store.get_node(run_id, node_id, iteration) or state
    if state.status not in (NODE_PENDING, NODE_RUNNING):
        return Step("ignored")
    now = rt.clock()
    # A running node is stale once its lease expired; one without a lease after stalled_after_s.
    stale = lease_rules.stalled(state, now=now, older_than=now - rt.settings.stalled_after_s)
    takeover = state.status == NODE_RUNNING and (redelivered or stale)
    began, keeper = begin_leased(
        rt,
        claim,
        (run_id, node_id, iteration),
        attempt,
        takeover=takeover,
        # The run's first claim moves it to running in the same write.
        start_run=run.status in (RUN_PENDING, RUN_WAITING),
    )
    if began is None:
        # Another delivery holds it: at least once never means "concurrently twice" on purpose.
        store.append_history(run_id, "node.busy", node_id=node_id, data={"attempt": attempt})
        return Step("busy")
    att = Attempt(scope, scope.bp.node(node_id), iteration, began.attempts, chord, inline)
    if began.deliveries > rt.settings.max_deliveries:
        error = (
            f"node {node_id!r} attempt {att.number} was delivered {began.deliveries - 1} times "
            "without finishing (its worker crashed or was killed while running it)"
        )
        return fail(att, error, retryable=False)
    started = time.monotonic()
    with held(keeper, began):
        step = _run(att, worker)
    rt.metrics.node_attempt(
        scope.bp.id,
        node_id,
        step.kind if step.kind != "detached" else "completed",
        time.monotonic() - started,
    )
    return step


def _context(att: Attempt) -> tuple[NodeContext, RunData]:
    scope, store = att.scope, att.scope.store
    run_id, bp = scope.run_id, scope.bp
    context = RunContext(
        lambda: store.get_context(run_id), resolve=lambda v: resolve_ref(scope.rt, v)
    )
    data = RunData(scope, att.node_id, att.iteration, context)
    ctx = NodeContext(
        run_id=run_id,
        node_id=att.node_id,
        iteration=att.iteration,
        attempt=att.number,
        run_input=scope.run.input,
        params=att.spec.params,
        load_outputs=lambda: data.outputs,
        load_context=context,
        load_input=lambda: resolve_ref(scope.rt, data.input),
        load_branches=(
            (lambda: branches(scope, att.node_id, att.iteration))
            if att.node_id in bp.analysis.join_nodes
            else None
        ),
    )
    return ctx, data


def _run(att: Attempt, worker: str | None) -> Step:
    """Run the claimed attempt: a built-in node, or the registered function."""
    rt = att.scope.rt
    ctx, data = _context(att)
    special = builtin(att.spec.uses)
    if special is not None and att.spec.uses not in rt.nodes.names():
        return _run_builtin(att, special, ctx, data)
    outcome = call_node(
        lambda: rt.nodes.get(att.spec.uses),
        ctx,
        timeout_s=att.spec.config.timeout_s,
        timeout_errors=rt.port.timeout_errors,
    )
    if isinstance(outcome, Done):
        return complete(att, outcome.output, outcome.action, ctx, data)
    if isinstance(outcome, Failed):
        return fail(att, outcome.error, retryable=outcome.retryable, delay_s=outcome.delay_s)
    return missing_node(att, outcome.error, worker)


def _run_builtin(att: Attempt, special: Builtin, ctx: NodeContext, data: RunData) -> Step:
    try:
        result = special.run(EngineCall(att, data))
    except NodeError as exc:
        return fail(att, str(exc), retryable=exc.retryable, delay_s=exc.delay_s)
    if result is None:
        return Step("waiting")
    output, action = result
    return complete(att, output, action, ctx, data)
