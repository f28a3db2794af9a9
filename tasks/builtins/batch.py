"""``batch-scatter`` and ``batch-gather``: one branch per item of a list, gathered in order.

The scatter's input is the list (its ``inputs`` names it, as flowcraft's
builder writes it); each item runs the node ``params.workerUsesKey`` as a task
of its own, at most ``params.concurrency`` (flowcraft's ``chunkSize``) at a
time, each window of items a Celery chord. The gather runs once every item
completed and returns the outputs in item order. Items and outputs are kept in
pages of the state store, never in one row or message: what the gather returns
(and writes to ``params.outputKey``) is a reference to them, which a node
reading it as its ``ctx.input`` or from ``ctx.context`` gets as the list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from tasks.builtins.base import Builtin, BuiltinCall, BuiltinResult, positive_int_problem
from tasks.errors import NodeError

__all__ = ["GATHER_USES", "SCATTER_USES", "BatchGather", "BatchScatter", "window_of"]

SCATTER_USES = "batch-scatter"
GATHER_USES = "batch-gather"
#: Items per window when no ``concurrency`` is given: a chord body receives one
#: small result per item of its window, so windows keep that message bounded.
DEFAULT_WINDOW = 500


def window_of(params: Mapping[str, Any]) -> int:
    """How many items run at a time."""
    value = params.get("concurrency") or params.get("chunkSize")
    return value if isinstance(value, int) and value >= 1 else DEFAULT_WINDOW


class BatchScatter(Builtin):
    """Fan out over the input list: one item task per element."""

    uses = SCATTER_USES
    params: ClassVar[Mapping[str, str]] = {
        "workerUsesKey": "the registered node each item runs",
        "gatherNodeId": "the batch-gather node (default: the one this node's edge leads to)",
        "outputKey": "the context key the gathered outputs are written to (by the gather)",
        "concurrency": f"how many items run at a time (default {DEFAULT_WINDOW})",
        "chunkSize": "flowcraft's name for 'concurrency'",
    }

    def check(self, params: Mapping[str, Any]) -> list[str]:
        """The worker is required; the window sizes are positive integers."""
        worker = params.get("workerUsesKey")
        problems = []
        if not (isinstance(worker, str) and worker):
            problems.append(f"params.workerUsesKey is required (a node name), got {worker!r}")
        for key in ("gatherNodeId", "outputKey"):
            if key in params and not (isinstance(params[key], str) and params[key]):
                problems.append(f"params.{key} must be a non-empty string, got {params[key]!r}")
        return (
            problems
            + positive_int_problem(params, "concurrency")
            + positive_int_problem(params, "chunkSize")
        )

    def run(self, call: BuiltinCall) -> BuiltinResult:
        """Keep the items; the engine starts their tasks once this node's completion commits."""
        items = call.input
        if items is None:
            items = []  # flowcraft: ``|| []``
        if not isinstance(items, list):
            raise NodeError(
                f"Input for batch-scatter node {call.node_id!r} must be an array, "
                f"got {type(items).__name__}",
                retryable=False,
            )
        count = call.scatter(items)
        return {"items": count, "concurrency": window_of(call.params)}, None


class BatchGather(Builtin):
    """Collect the items' outputs in order (a paged reference; the list to its readers)."""

    uses = GATHER_USES
    params: ClassVar[Mapping[str, str]] = {
        "outputKey": "the context key the outputs are written to (default: this node's id)",
        "gatherNodeId": "flowcraft's builder writes it; it names this node",
    }

    def run(self, call: BuiltinCall) -> BuiltinResult:
        """Gather once every item completed (the engine fires this node then)."""
        ref = call.gather()
        key = call.params.get("outputKey") or call.node_id
        call.context.set(str(key), ref)
        return ref, None
