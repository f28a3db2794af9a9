"""Routing a completed node: which edges are taken, which successors run, skip or arrive at joins.

Pure functions of the blueprint and the node's result; the engine commits what
they return in one conditional write, so edges are evaluated once and never again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from state.constants import ARRIVAL_COMPLETED, ARRIVAL_SKIPPED
from state.records import Arrival
from tasks.blueprint import Blueprint, EdgeSpec, compile_condition

__all__ = ["Plan", "plan_completion", "plan_from_taken", "plan_skip", "routing_source"]


@dataclass(frozen=True)
class Plan:
    """What one completion (or skip) writes besides the node's own record."""

    edges_taken: tuple[str, ...]
    pending: tuple[str, ...]
    skipped: tuple[str, ...]
    arrivals: tuple[Arrival, ...]


def _choose(edges: tuple[EdgeSpec, ...], action: str | None, names: Mapping[str, Any]) -> list[str]:
    # Edges whose action matches are taken; when none matches, the edges without an action.
    matching = [e for e in edges if action is not None and e.action == action]
    candidates = matching or [e for e in edges if e.action is None]
    taken: list[str] = []
    for e in candidates:
        chosen = e.condition is None or compile_condition(e.condition).evaluate(names)
        if chosen and e.target not in taken:
            taken.append(e.target)
    return taken


def routing_source(bp: Blueprint, node_id: str, failed_primaries: tuple[str, ...] = ()) -> str:
    """The node whose outgoing edges route ``node_id``'s result.

    A fallback node with no edges of its own takes the place of the primary
    that failed: the primary's edges route its output.
    """
    if bp.analysis.successors.get(node_id) or not failed_primaries:
        return node_id
    return failed_primaries[0]


def _skip_from(
    bp: Blueprint,
    source: str,
    targets: list[str],
    skipped: list[str],
    arrivals: list[Arrival],
    outcome: str = ARRIVAL_SKIPPED,
) -> None:
    joins = bp.analysis.join_nodes
    stack = [(source, t) for t in reversed(targets)]
    while stack:
        pred, target = stack.pop()
        if target in joins:
            # A join counts a skipped predecessor as settled; the arrival path decides.
            arrivals.append(Arrival(join_id=target, predecessor=pred, outcome=outcome))
        elif target not in skipped:
            skipped.append(target)
            nxt = [e.target for e in bp.analysis.successors.get(target, ())]
            stack.extend((target, t) for t in reversed(list(dict.fromkeys(nxt))))


def plan_completion(
    bp: Blueprint,
    source: str,
    *,
    output: Any,
    action: str | None,
    context: Mapping[str, Any],
    input: Any,
) -> Plan:
    """Route a completed node: ``source`` is the node whose edges apply (see ``routing_source``)."""
    edges = bp.analysis.successors.get(source, ())
    names = {
        "output": output,
        "action": action,
        "result": {"output": output, "action": action},
        "context": context,
        "input": input,
    }
    return plan_from_taken(bp, source, tuple(_choose(edges, action, names)))


def plan_from_taken(bp: Blueprint, source: str, taken: tuple[str, ...]) -> Plan:
    """The plan implied by edges already chosen (used again when repairing a duplicate)."""
    edges = bp.analysis.successors.get(source, ())
    not_taken = [t for t in dict.fromkeys(e.target for e in edges) if t not in taken]
    joins = bp.analysis.join_nodes
    pending = [t for t in taken if t not in joins]
    arrivals = [
        Arrival(join_id=t, predecessor=source, outcome=ARRIVAL_COMPLETED)
        for t in taken
        if t in joins
    ]
    skipped: list[str] = []
    _skip_from(bp, source, not_taken, skipped, arrivals)
    return Plan(tuple(taken), tuple(pending), tuple(skipped), tuple(arrivals))


def plan_skip(bp: Blueprint, node_id: str, *, outcome: str = ARRIVAL_SKIPPED) -> Plan:
    """Skip what follows ``node_id``; joins downstream get an arrival with ``outcome``.

    Used for a join none of whose predecessors was taken (``skipped``) and for a
    failed node whose branch a tolerant join accepts (``failed``).
    """
    targets = list(dict.fromkeys(e.target for e in bp.analysis.successors.get(node_id, ())))
    skipped: list[str] = []
    arrivals: list[Arrival] = []
    _skip_from(bp, node_id, targets, skipped, arrivals, outcome)
    return Plan((), (), tuple(skipped), tuple(arrivals))
