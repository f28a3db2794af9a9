"""Nodes and blueprints of the end-to-end tests of the built-ins: subflow, batch, loop, webhook.

Imported by ``tests.apps.e2e_nodes`` (the workers' FLOWBRIDGE_APP). Side effects are
counted in Redis as there (``effects:<name>``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from flowbridge import NodeContext, Result, node, register_blueprint
from tests.apps.e2e_nodes import _redis, effect


def _prefix() -> str:
    return os.environ.get("FLOWBRIDGE_REDIS_PREFIX", "")


@node("items")
def items(ctx: NodeContext) -> list[int]:
    """The list a batch runs over: ``range(params.count)`` (or the run input's ``count``)."""
    return list(range(int(ctx.context.get("count") or ctx.params.get("count", 10))))


@node("double")
def double(ctx: NodeContext) -> int:
    """A batch item: count the commit-independent call and return twice the item."""
    effect("double.calls")
    return int(ctx.input) * 2


@node("slow-double")
def slow_double(ctx: NodeContext) -> int:
    """A batch item that takes a while; item ``params.victim`` (from the context) records its pid."""
    effect(f"item{ctx.input}.started")
    if ctx.input == ctx.context.get("victim"):
        _redis().set(_prefix() + "pid:victim", os.getpid())
    time.sleep(float(ctx.context.get("item_s") or 0.2))
    return int(ctx.input) * 2


@node("total")
def total(ctx: NodeContext) -> dict[str, Any]:
    """After a gather: the list arrives as the input."""
    effect("total")
    values = list(ctx.input)
    return {
        "count": len(values),
        "sum": sum(values),
        "head": values[:3],
        "ordered": values == sorted(values),
    }


@node("bump")
def bump(ctx: NodeContext) -> int:
    """A loop body: count a pass; the pass given as ``victim`` records its pid and sleeps."""
    n = int(ctx.context.get("n") or 0) + 1
    effect(f"bump.started.{ctx.iteration}")
    if ctx.iteration == ctx.context.get("victim"):
        _redis().set(_prefix() + "pid:victim", os.getpid())
        time.sleep(float(ctx.context.get("victim_s") or 3))
    ctx.context.set("n", n)
    return n


@node("child-work")
def child_work(ctx: NodeContext) -> dict[str, Any]:
    """A child run's node: its input is what the parent's subflow passed."""
    effect("child-work")
    return {"got": ctx.input, "run": ctx.run_id}


@node("parent-after")
def parent_after(ctx: NodeContext) -> dict[str, Any]:
    """The parent's node after the subflow: it gets the child's output."""
    effect("parent-after")
    return {"from_child": ctx.input, "mapped": ctx.context.get("child_result")}


@node("passthrough")
def passthrough(ctx: NodeContext) -> Any:
    """Its output is its input."""
    effect(ctx.node_id)
    return ctx.input


@node("pick")
def pick(ctx: NodeContext) -> Result:
    """Choose an edge by the run input's ``route``."""
    return Result(output={"route": ctx.run_input.get("route")}, action=ctx.run_input.get("route"))


register_blueprint(
    {
        "id": "sub-child",
        "nodes": [{"id": "work", "uses": "child-work"}, {"id": "done", "uses": "echo"}],
        "edges": [{"source": "work", "target": "done"}],
    }
)
register_blueprint(
    {
        "id": "sub-parent",
        "nodes": [
            {"id": "start", "uses": "echo"},
            {
                "id": "call",
                "uses": "subflow",
                "params": {"blueprintId": "sub-child", "outputs": {"child_result": "work"}},
            },
            {"id": "after", "uses": "parent-after"},
        ],
        "edges": [{"source": "start", "target": "call"}, {"source": "call", "target": "after"}],
    }
)
register_blueprint(
    {
        "id": "sub-waiting-child",
        "nodes": [{"id": "hold", "uses": "wait"}, {"id": "after", "uses": "passthrough"}],
        "edges": [{"source": "hold", "target": "after"}],
    }
)
register_blueprint(
    {
        "id": "sub-parent-waiting",
        "nodes": [
            {"id": "call", "uses": "subflow", "params": {"blueprintId": "sub-waiting-child"}},
            {"id": "after", "uses": "echo"},
        ],
        "edges": [{"source": "call", "target": "after"}],
    }
)


def _batch(bid: str, worker: str, **params: Any) -> None:
    register_blueprint(
        {
            "id": bid,
            "nodes": [
                {"id": "prepare", "uses": "items"},
                {
                    "id": "fan",
                    "uses": "batch-scatter",
                    "inputs": "prepare",
                    "params": {"workerUsesKey": worker, "outputKey": "doubled", **params},
                },
                {"id": "gather", "uses": "batch-gather", "params": {"outputKey": "doubled"}},
                {"id": "total", "uses": "total"},
            ],
            "edges": [
                {"source": "prepare", "target": "fan"},
                {"source": "fan", "target": "gather"},
                {"source": "gather", "target": "total"},
            ],
        }
    )


_batch("batch", "double", concurrency=10)
_batch("batch-wide", "double")
_batch("batch-slow", "slow-double", concurrency=4)

register_blueprint(
    {
        "id": "loop",
        "nodes": [
            {"id": "init", "uses": "echo"},
            {
                "id": "again",
                "uses": "loop-controller",
                "params": {"condition": "n < limit", "maxIterations": 50},
            },
            {"id": "bump", "uses": "bump"},
            {"id": "done", "uses": "passthrough"},
        ],
        "edges": [
            {"source": "init", "target": "again"},
            {"source": "again", "target": "bump", "action": "continue"},
            {"source": "bump", "target": "again"},
            {"source": "again", "target": "done", "action": "break"},
        ],
    }
)
register_blueprint(
    {
        "id": "two-starts",
        "nodes": [
            {"id": "left", "uses": "echo"},
            {"id": "right", "uses": "echo"},
            {"id": "both", "uses": "collect"},
        ],
        "edges": [{"source": "left", "target": "both"}, {"source": "right", "target": "both"}],
    }
)
register_blueprint(
    {
        "id": "review",
        "nodes": [
            {"id": "start", "uses": "echo"},
            {"id": "review", "uses": "wait"},
            {"id": "approve", "uses": "echo"},
            {"id": "reject", "uses": "echo"},
        ],
        "edges": [
            {"source": "start", "target": "review"},
            {"source": "review", "target": "approve", "action": "approve"},
            {"source": "review", "target": "reject", "action": "reject"},
        ],
    }
)
# flowcraft's webhook pair: the URL node, the wait for its call, and a node after it.
register_blueprint(
    {
        "id": "webhook",
        "nodes": [
            {"id": "hook", "uses": "webhook"},
            {"id": "wait-for-call", "uses": "wait", "params": {"eventName": "webhook:hook"}},
            {"id": "next", "uses": "passthrough"},
        ],
        "edges": [
            {"source": "hook", "target": "wait-for-call"},
            {"source": "wait-for-call", "target": "next"},
        ],
    }
)
