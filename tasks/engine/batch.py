"""Batches on Celery: a scatter's items as tasks in windows of chords, gathered once, in order.

- The scatter keeps its list in pages (``put_batch``, ``PAGE_ITEMS`` a page) and
  completes with the count. Its completion dispatches the first window: a
  chord of item tasks whose body (``fire_from_chord(window=...)``) dispatches
  the next window, and after the last one fires the gather. A window is the
  batch's concurrency limit; it also bounds the chord body's message (one
  ``{node, outcome}`` per item of the window).
- An item is a node record of its own (``<scatter>[<i>]``, created by its task:
  ``begin_attempt(create=True)``), claimed, run and committed like any node,
  so a redelivered item task runs its code again at most once more and its
  completion applies once. The completion is an arrival at the gather (a set
  keyed by item); the gather fires through the store's one conditional write
  when every item arrived.
- The gather reads the items' outputs in order and keeps them in pages too;
  its output (and ``outputKey``) is a reference, resolved into the list for
  whoever reads it as ``ctx.input`` or from ``ctx.context``.
- A failed item (after the scatter's ``maxRetries`` attempts) fails the run.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from state.constants import ARRIVAL_COMPLETED, NODE_COMPLETED, NODE_PENDING, NODE_SKIPPED
from state.records import Arrival, NodeCompletion, NodeState
from tasks.builtins import GATHER_USES, SCATTER_USES, window_of
from tasks.context import NodeContext
from tasks.engine.outcome import Done, Failed, call_node
from tasks.engine.scope import RunScope, Step
from tasks.leases import begin_leased, held
from tasks.port import NodeTask
from tasks.runtime import Runtime

__all__ = [
    "PAGE_ITEMS",
    "REF_KEY",
    "batches_open",
    "execute_item",
    "gather_ref",
    "is_ref",
    "put_items",
    "resolve_ref",
    "start_items",
    "window_done",
]

#: Items (or outputs) per stored page.
PAGE_ITEMS = 100
#: The key that marks a value as a reference to a batch's outputs.
REF_KEY = "$flowbridge.batch"
#: Outputs read per round when a gather collects them.
_READ_CHUNK = 200


def item_id(scatter: str, index: int) -> str:
    """The node id of a batch's item record."""
    return f"{scatter}[{index}]"


def _key(scatter: str, iteration: int, kind: str) -> str:
    return f"{scatter}:{iteration}:{kind}"


def _pages(values: Sequence[Any]) -> dict[int, list[Any]]:
    return {
        n // PAGE_ITEMS: list(values[n : n + PAGE_ITEMS]) for n in range(0, len(values), PAGE_ITEMS)
    }


def gather_of(scope: RunScope, scatter: str) -> str:
    """The batch-gather a scatter leads to (validation guarantees exactly one)."""
    bp = scope.bp
    return next(
        e.target
        for e in bp.analysis.successors.get(scatter, ())
        if bp.node(e.target).uses == GATHER_USES
    )


def scatter_of(scope: RunScope, gather: str) -> str:
    """The batch-scatter a gather follows."""
    return scope.bp.analysis.predecessors[gather][0]


# --- references -------------------------------------------------------------------------------
def is_ref(value: Any) -> bool:
    """Whether ``value`` is a reference to a batch's outputs."""
    return isinstance(value, Mapping) and REF_KEY in value


def gather_ref(run_id: str, scatter: str, iteration: int, length: int) -> dict[str, Any]:
    """The reference a gather returns: where its outputs are, and how many."""
    return {REF_KEY: _key(scatter, iteration, "out"), "run_id": run_id, "length": length}


def resolve_ref(rt: Runtime, value: Any) -> Any:
    """The list a reference stands for (anything else unchanged)."""
    if not is_ref(value):
        return value
    length = int(value.get("length") or 0)
    pages = rt.store.get_batch(str(value["run_id"]), str(value[REF_KEY]), range(_count(length)))
    out: list[Any] = []
    for n in range(_count(length)):
        out.extend(pages.get(n, []))
    return out


def _count(length: int) -> int:
    return (length + PAGE_ITEMS - 1) // PAGE_ITEMS


# --- the scatter ------------------------------------------------------------------------------
def put_items(scope: RunScope, scatter: str, iteration: int, items: list[Any]) -> int:
    """Keep a scatter's items in pages (the same pages on every attempt); how many."""
    scope.store.put_batch(scope.run_id, _key(scatter, iteration, "in"), _pages(items))
    return len(items)


def start_items(scope: RunScope, scatter: NodeState, *, repair: bool) -> None:
    """After the scatter committed: dispatch the first window (a repair: the first unfinished)."""
    n = int((scatter.output or {}).get("items", 0))
    gather = gather_of(scope, scatter.node_id)
    it = scatter.iteration
    if n == 0:
        _try_fire_gather(scope, gather, it, n)
        return
    window = window_of(scope.bp.node(scatter.node_id).params)
    first = 0
    if repair:
        if scope.store.get_node(scope.run_id, gather, it) is not None:
            return  # fired already
        arrived = scope.store.get_arrivals(scope.run_id, gather, it)
        done = next((i for i in range(n) if item_id(scatter.node_id, i) not in arrived), n)
        if done == n:
            _try_fire_gather(scope, gather, it, n)
            return
        first = done // window
    _dispatch_window(scope, scatter.node_id, it, first, n, window)


def _dispatch_window(
    scope: RunScope, scatter: str, iteration: int, window: int, n: int, size: int
) -> None:
    heads = [
        item_task(scope, scatter, iteration, i, branch=True)
        for i in range(window * size, min(n, (window + 1) * size))
    ]
    scope.rt.port.dispatch_chord(heads, join_id=gather_of(scope, scatter), window=window)


def item_task(
    scope: RunScope, scatter: str, iteration: int, index: int, *, attempt: int = 1, **kw: Any
) -> NodeTask:
    """The task of one attempt of one item."""
    spec = scope.bp.node(scatter)
    return NodeTask(
        run_id=scope.run_id,
        node_id=scatter,
        iteration=iteration,
        attempt=attempt,
        item=index,
        timeout_s=spec.config.timeout_s,
        **kw,
    )


def window_done(scope: RunScope, gather: str, iteration: int, window: int) -> str:
    """A window's chord body: start the next window, or after the last, fire the gather."""
    scatter = scatter_of(scope, gather)
    rec = scope.store.get_node(scope.run_id, scatter, iteration)
    if rec is None or rec.status != NODE_COMPLETED:
        return "ignored"
    n = int((rec.output or {}).get("items", 0))
    size = window_of(scope.bp.node(scatter).params)
    if (window + 1) * size < n:
        _dispatch_window(scope, scatter, iteration, window + 1, n, size)
        return "next-window"
    return "fired" if _try_fire_gather(scope, gather, iteration, n) else "waiting"


def _try_fire_gather(scope: RunScope, gather: str, iteration: int, n: int) -> bool:
    """Fire the gather once every item arrived (one conditional write decides)."""
    arrivals = scope.store.get_arrivals(scope.run_id, gather, iteration)
    done = sum(1 for o in arrivals.values() if o == ARRIVAL_COMPLETED)
    if done < n or not scope.store.fire_join(scope.run_id, gather, iteration):
        return False
    scope.dispatch(gather, iteration=iteration)
    return True


def batches_open(scope: RunScope, recs: Mapping[str, NodeState]) -> bool:
    """Whether a completed scatter's gather has not fired yet (its items keep the run open)."""
    for node_id, rec in recs.items():
        if rec.status != NODE_COMPLETED or scope.bp.node(node_id).uses != SCATTER_USES:
            continue
        gather = gather_of(scope, node_id)
        if gather not in recs:
            return True
    return False


# --- one item ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _page(rt: Runtime, run_id: str, key: str, page: int) -> tuple[Any, ...]:
    # Pages never change once written: the item tasks of one page read it once per process.
    return tuple(rt.store.get_batch(run_id, key, [page]).get(page, []))


def _item_input(rt: Runtime, run_id: str, scatter: str, iteration: int, index: int) -> Any:
    page = _page(rt, run_id, _key(scatter, iteration, "in"), index // PAGE_ITEMS)
    offset = index % PAGE_ITEMS
    return page[offset] if offset < len(page) else None


def execute_item(
    scope: RunScope,
    scatter: str,
    iteration: int,
    index: int,
    attempt: int,
    *,
    chord: bool,
    redelivered: bool,
    claim: str | None = None,
) -> Step:
    """Run one attempt of one item if the store says it should run (as ``execute_node``)."""
    rt, store, run_id = scope.rt, scope.store, scope.run_id
    node_id = item_id(scatter, index)
    gather = gather_of(scope, scatter)
    rec = store.get_node(run_id, node_id, iteration)
    if rec is not None and rec.status in (NODE_COMPLETED, NODE_SKIPPED):
        if not chord:
            _fire_after_detached(scope, scatter, gather, iteration)
        return Step("duplicate")
    takeover = rec is not None and rec.status != NODE_PENDING and redelivered
    key = (run_id, node_id, iteration)
    began, keeper = begin_leased(rt, claim, key, attempt, takeover=takeover, create=True)
    if began is None:
        return Step("busy")
    spec = scope.bp.node(scatter)
    worker = str(spec.params["workerUsesKey"])
    number = began.attempts
    if began.deliveries > rt.settings.max_deliveries:
        return _fail_item(
            scope,
            node_id,
            iteration,
            f"batch item {node_id!r} attempt {number} was delivered {began.deliveries - 1} times "
            "without finishing (its worker crashed or was killed while running it)",
        )
    ctx = NodeContext(
        run_id=run_id,
        node_id=node_id,
        iteration=iteration,
        attempt=number,
        run_input=scope.run.input,
        params={},
        load_outputs=dict,
        load_context=lambda: store.get_context(run_id),
        load_input=lambda: _item_input(rt, run_id, scatter, iteration, index),
    )
    with held(keeper, began):
        outcome = call_node(
            lambda: rt.nodes.get(worker),
            ctx,
            timeout_s=spec.config.timeout_s,
            timeout_errors=rt.port.timeout_errors,
        )
    if isinstance(outcome, Done):
        res = store.commit_node(
            NodeCompletion(
                run_id=run_id,
                node_id=node_id,
                iteration=iteration,
                attempt=number,
                output=outcome.output,
                action=outcome.action,
                arrivals=(Arrival(join_id=gather, predecessor=node_id, outcome=ARRIVAL_COMPLETED),),
                context_writes=dict(ctx.context.staged),
                context_deletes=tuple(sorted(ctx.context.deleted)),
                outbox=tuple(ctx.emitted),
            )
        )
        if res.applied and ctx.emitted:
            rt.notify_outbox()
        if not chord or not res.applied:
            _fire_after_detached(scope, scatter, gather, iteration)
        return Step("completed" if res.applied else "duplicate")
    if not isinstance(outcome, Failed):
        reason = f"batch item {node_id!r}: {outcome.error}"
        return _fail_item(scope, node_id, iteration, reason)
    error = outcome.error
    if outcome.retryable and number < spec.config.max_attempts:
        backoff = spec.config.retry_delay_s * (2 ** (number - 1))
        delay = outcome.delay_s if outcome.delay_s is not None else backoff
        wait = min(delay, rt.settings.max_delay_s)
        if not store.retry_node(run_id, node_id, iteration, attempt=number, error=error):
            return Step("ignored")
        if chord:
            return Step("retry", retry_attempt=number + 1, countdown=wait)
        rt.port.dispatch(
            item_task(scope, scatter, iteration, index, attempt=number + 1, countdown=wait)
        )
        return Step("retry")
    reason = f"batch item {node_id!r} failed after {number} attempt(s): {error}"
    return _fail_item(scope, node_id, iteration, reason)


def _fire_after_detached(scope: RunScope, scatter: str, gather: str, iteration: int) -> None:
    """An item that completed outside its window's chord fires the gather if it was the last."""
    rec = scope.store.get_node(scope.run_id, scatter, iteration)
    if rec is not None and rec.status == NODE_COMPLETED:
        _try_fire_gather(scope, gather, iteration, int((rec.output or {}).get("items", 0)))


def _fail_item(scope: RunScope, node_id: str, iteration: int, reason: str) -> Step:
    outbox = scope.finish_outbox("failed", error=reason)
    if scope.store.fail_node(scope.run_id, node_id, iteration, error=reason, outbox=outbox):
        scope.rt.notify_outbox()
    return Step("failed")


# --- the gather -------------------------------------------------------------------------------
def gather_outputs(scope: RunScope, gather: str, iteration: int) -> dict[str, Any]:
    """Read every item's output in order, keep them in pages; the reference to them."""
    scatter = scatter_of(scope, gather)
    rec = scope.store.get_node(scope.run_id, scatter, iteration)
    n = int(((rec.output if rec else None) or {}).get("items", 0))
    outputs: list[Any] = []
    for start in range(0, n, _READ_CHUNK):
        ids = [item_id(scatter, i) for i in range(start, min(n, start + _READ_CHUNK))]
        recs = scope.store.get_nodes(scope.run_id, ids, iteration)
        outputs.extend(recs[i].output if i in recs else None for i in ids)
    scope.store.put_batch(scope.run_id, _key(scatter, iteration, "out"), _pages(outputs))
    return gather_ref(scope.run_id, scatter, iteration, n)
