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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from state.constants import (
    NODE_COMPLETED,
    NODE_PENDING,
    NODE_RUNNING,
    NODE_SKIPPED,
    NODE_WAITING,
    RUN_ACTIVE,
    RUN_PAUSED,
    RUN_PENDING,
    RUN_RUNNING,
    RUN_WAITING,
)
from state.records import Wakeup
from tasks.builtins import Builtin, builtin
from tasks.context import NodeContext
from tasks.engine.failure import fail, missing_node
from tasks.engine.graph import branches, complete, settle
from tasks.engine.outcome import Done, Failed, call_node
from tasks.engine.scope import Attempt, RunScope, Step
from tasks.errors import NodeError
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
    state = store.get_node(run_id, node_id, iteration)
    if state is None:
        return ignored("not on the frontier")
    if state.status in (NODE_COMPLETED, NODE_SKIPPED):
        # A redelivery of finished work: repair what may not have happened after the commit.
        settle(scope, state, repair=True)
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
    att = Attempt(scope, scope.bp.node(node_id), iteration, began.attempts, chord)
    if began.deliveries > rt.settings.max_deliveries:
        error = (
            f"node {node_id!r} attempt {att.number} was delivered {began.deliveries - 1} times "
            "without finishing (its worker crashed or was killed while running it)"
        )
        return fail(att, error, retryable=False)
    started = time.monotonic()
    step = _run(att, worker)
    rt.metrics.node_attempt(
        scope.bp.id,
        node_id,
        step.kind if step.kind != "detached" else "completed",
        time.monotonic() - started,
    )
    return step


def _context(att: Attempt) -> NodeContext:
    scope, store = att.scope, att.scope.store
    run_id, bp = scope.run_id, scope.bp
    return NodeContext(
        run_id=run_id,
        node_id=att.node_id,
        iteration=att.iteration,
        attempt=att.number,
        input=scope.run.input,
        params=att.spec.params,
        load_outputs=lambda: {
            n: r.output
            for n, r in store.get_nodes(run_id, bp.node_ids).items()
            if r.status == NODE_COMPLETED
        },
        load_context=lambda: store.get_context(run_id),
        load_branches=(
            (lambda: branches(scope, att.node_id, att.iteration))
            if att.node_id in bp.analysis.join_nodes
            else None
        ),
    )


def _run(att: Attempt, worker: str | None) -> Step:
    """Run the claimed attempt: a built-in node, or the registered function."""
    rt = att.scope.rt
    ctx = _context(att)
    special = builtin(att.spec.uses)
    if special is not None and att.spec.uses not in rt.nodes.names():
        return _run_builtin(att, special, ctx)
    outcome = call_node(
        lambda: rt.nodes.get(att.spec.uses),
        ctx,
        timeout_s=att.spec.config.timeout_s,
        timeout_errors=rt.port.timeout_errors,
    )
    if isinstance(outcome, Done):
        return complete(att, outcome.output, outcome.action, ctx)
    if isinstance(outcome, Failed):
        return fail(att, outcome.error, retryable=outcome.retryable, delay_s=outcome.delay_s)
    return missing_node(att, outcome.error, worker)


def _run_builtin(att: Attempt, special: Builtin, ctx: NodeContext) -> Step:
    try:
        result = special.run(_BuiltinCall(att))
    except NodeError as exc:
        return fail(att, str(exc), retryable=False)
    if result is None:
        return Step("waiting")
    output, action = result
    return complete(att, output, action, ctx)


@dataclass
class _BuiltinCall:
    """The engine side of ``tasks.builtins.BuiltinCall`` for one attempt."""

    att: Attempt

    @property
    def run_id(self) -> str:
        return self.att.scope.run_id

    @property
    def node_id(self) -> str:
        return self.att.node_id

    @property
    def iteration(self) -> int:
        return self.att.iteration

    @property
    def params(self) -> Mapping[str, Any]:
        return self.att.spec.params

    def now(self) -> float:
        return self.att.scope.rt.clock()

    def wakeup(self) -> Wakeup | None:
        return self.att.scope.store.get_wakeup(self.run_id, self.node_id, self.iteration)

    def suspend(self, *, event: str | None = None, due_at: float | None = None) -> Wakeup | None:
        store = self.att.scope.store
        return store.suspend_node(
            self.run_id, self.node_id, self.iteration, event=event, due_at=due_at
        )

    def schedule_wake(self, delay_s: float) -> None:
        scope = self.att.scope
        if delay_s <= scope.rt.settings.max_delay_s:
            scope.dispatch(self.node_id, iteration=self.iteration, countdown=delay_s, wake=True)
