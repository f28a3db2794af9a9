"""Building flowcraft's scenarios compactly: nodes, edges, blueprints, a runner of them.

A flowcraft test registers functions and builds a blueprint with its fluent
builder; here the same blueprint is written as flowcraft's JSON (``bp``, ``n``,
``e``), the functions are registered by ``uses`` name, and
``flowbridge.testing.Runner`` runs it on the production engine in one process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flowbridge import NodeContext, Result
from flowbridge.testing import Runner
from tasks.blueprint import Blueprint
from tasks.registry import BlueprintRegistry, NodeRegistry

Node = Callable[[NodeContext], Any]


def n(node_id: str, uses: str | None = None, **fields: Any) -> dict[str, Any]:
    """A node; ``uses`` defaults to its id (most scenarios register one function per node)."""
    return {"id": node_id, "uses": uses or node_id, **fields}


def e(source: str, target: str, **fields: Any) -> dict[str, Any]:
    """An edge (``action``, ``condition``, ``transform`` as keyword arguments)."""
    return {"source": source, "target": target, **fields}


def bp(
    bp_id: str, nodes: Iterable[dict[str, Any]], edges: Iterable[dict[str, Any]] = (), **top: Any
) -> dict[str, Any]:
    """A blueprint as flowcraft's JSON."""
    return {"id": bp_id, "nodes": list(nodes), "edges": list(edges), **top}


def value(v: Any, action: str | None = None, *, calls: Counter[str] | None = None) -> Node:
    """A node that returns ``v`` (with ``action``), counting its calls under its node id."""

    def fn(ctx: NodeContext) -> Any:
        if calls is not None:
            calls[ctx.node_id] += 1
        return v if action is None else Result(output=v, action=action)

    return fn


def boom(message: str = "boom", *, calls: Counter[str] | None = None) -> Node:
    """A node that always fails."""

    def fn(ctx: NodeContext) -> Any:
        if calls is not None:
            calls[ctx.node_id] += 1
        raise RuntimeError(message)

    return fn


def echo(*, calls: Counter[str] | None = None) -> Node:
    """A node whose output is its input."""

    def fn(ctx: NodeContext) -> Any:
        if calls is not None:
            calls[ctx.node_id] += 1
        return ctx.input

    return fn


def runner(nodes: Mapping[str, Node], *blueprints: dict[str, Any]) -> Runner:
    """A runner with exactly these nodes and blueprints."""
    node_registry, blueprint_registry = NodeRegistry(), BlueprintRegistry()
    for name, fn in nodes.items():
        node_registry.register(name, fn)
    for data in blueprints:
        blueprint_registry.register(Blueprint.from_dict(data))
    return Runner(node_registry=node_registry, blueprint_registry=blueprint_registry)


def run(
    nodes: Mapping[str, Node],
    blueprint: dict[str, Any],
    context: dict[str, Any] | None = None,
    *others: dict[str, Any],
) -> dict[str, Any]:
    """Run ``blueprint`` with ``context`` as its input (flowcraft's initial state) to its end."""
    return runner(nodes, blueprint, *others).run(blueprint["id"], context or {})


def out(run_json: dict[str, Any], node_id: str) -> Any:
    """flowcraft's ``context['_outputs.<id>']``: the node's output (None if it did not complete)."""
    node = run_json["nodes"].get(node_id)
    return None if node is None or node["status"] != "completed" else node["output"]


def ran(run_json: dict[str, Any]) -> set[str]:
    """The nodes that completed."""
    return {k for k, v in run_json["nodes"].items() if v["status"] == "completed"}
