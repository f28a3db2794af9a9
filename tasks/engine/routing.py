"""Routing a completed node: which edges are taken, which successors run, skip or arrive at joins.

Pure functions of the blueprint and the node's result; the engine commits what
they return in one conditional write, so edges are evaluated once and never again.

Which edges, as flowcraft chooses them: a loop controller's edges with a
condition come first (the first true ones end the loop's routing); then the
edges whose ``action`` is the result's and whose condition holds; if none was
taken (no action, no matching edge, or every matching one's condition false),
the edges without an action whose condition holds. A fallback routes along its
own edges and those of the node it replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from state.constants import ARRIVAL_COMPLETED, ARRIVAL_SKIPPED
from state.records import Arrival
from tasks.blueprint import Blueprint, EdgeSpec, compile_condition
from tasks.blueprint.analysis import CONTINUE
from tasks.builtins import GATHER_USES, SCATTER_USES

__all__ = ["Plan", "edges_of", "plan_completion", "plan_from_taken", "plan_skip"]


@dataclass(frozen=True)
class Plan:
    """What one completion (or skip) writes besides the node's own record."""

    edges_taken: tuple[str, ...]
    pending: tuple[str, ...]
    skipped: tuple[str, ...]
    arrivals: tuple[Arrival, ...]
    #: Successors at another iteration than the node's: (node id, iteration).
    pending_at: tuple[tuple[str, int], ...] = ()


def edges_of(
    bp: Blueprint, node_id: str, failed_primaries: tuple[str, ...] = ()
) -> tuple[EdgeSpec, ...]:
    """The edges that route ``node_id``'s result: its own, and a replaced primary's.

    A fallback that ran in place of failed primaries inherits their edges (as in
    flowcraft); identical edges count once.
    """
    edges = list(bp.analysis.successors.get(node_id, ()))
    for primary in failed_primaries:
        edges.extend(bp.analysis.successors.get(primary, ()))
    seen: set[tuple[str, str | None, str | None]] = set()
    unique: list[EdgeSpec] = []
    for e in edges:
        key = (e.target, e.action, e.condition)
        if key not in seen:
            seen.add(key)
            unique.append(e)
    return tuple(unique)


def _holds(edge: EdgeSpec, names: Mapping[str, Any]) -> bool:
    return edge.condition is None or compile_condition(edge.condition).evaluate(names)


def _choose(
    edges: tuple[EdgeSpec, ...], action: str | None, names: Mapping[str, Any], *, controller: bool
) -> list[str]:
    chosen: list[EdgeSpec] = []
    if controller:
        chosen = [e for e in edges if e.condition is not None and _holds(e, names)]
    if not chosen and action is not None:
        chosen = [e for e in edges if e.action == action and _holds(e, names)]
    if not chosen:
        chosen = [e for e in edges if e.action is None and _holds(e, names)]
    return list(dict.fromkeys(e.target for e in chosen))


def plan_completion(
    bp: Blueprint,
    node_id: str,
    iteration: int,
    edges: tuple[EdgeSpec, ...],
    *,
    output: Any,
    action: str | None,
    names: Mapping[str, Any],
) -> Plan:
    """Route a completed node along ``edges`` (``edges_of``) with the condition scope ``names``."""
    controller = node_id in bp.analysis.loops
    taken = _choose(edges, action, names, controller=controller)
    return plan_from_taken(bp, node_id, iteration, edges, tuple(taken))


def plan_from_taken(
    bp: Blueprint, node_id: str, iteration: int, edges: tuple[EdgeSpec, ...], taken: tuple[str, ...]
) -> Plan:
    """The plan implied by edges already chosen (used again when repairing a duplicate)."""
    a = bp.analysis
    joins = a.join_nodes
    pending: list[str] = []
    elsewhere: list[tuple[str, int]] = []
    arrivals: list[Arrival] = []
    scatter = bp.node(node_id).uses == SCATTER_USES
    for t in taken:
        at = a.target_iteration(node_id, t, iteration)
        if scatter and bp.node(t).uses == GATHER_USES:
            continue  # a batch's gather fires when its items have arrived
        if t in joins:
            arrivals.append(Arrival(join_id=t, predecessor=node_id, outcome=ARRIVAL_COMPLETED))
        elif at == iteration:
            pending.append(t)
        else:
            elsewhere.append((t, at))
    not_taken = [t for t in dict.fromkeys(e.target for e in edges) if t not in taken]
    loop = a.loops.get(node_id)
    if loop is not None:
        # A controller decides again at its next iteration: what it did not take now is not
        # skipped, except the exits it left when the loop ended (it took no edge back in).
        ended = not any(t in loop.entries for t in taken)
        not_taken = [t for t in not_taken if ended and t not in loop.body]
    skipped: list[str] = []
    _skip_from(bp, node_id, not_taken, skipped, arrivals)
    return Plan(tuple(taken), tuple(pending), tuple(skipped), tuple(arrivals), tuple(elsewhere))


def _skip_from(
    bp: Blueprint,
    source: str,
    targets: list[str],
    skipped: list[str],
    arrivals: list[Arrival],
    outcome: str = ARRIVAL_SKIPPED,
) -> None:
    a = bp.analysis
    stack = [(source, t) for t in reversed(targets)]
    while stack:
        pred, target = stack.pop()
        if target in a.join_nodes:
            # A join counts a skipped predecessor as settled; the arrival path decides.
            arrivals.append(Arrival(join_id=target, predecessor=pred, outcome=outcome))
        elif target in a.loops and a.loop_of.get(pred) == target:
            continue  # the way back into a loop: that pass simply ends here
        elif target not in skipped:
            skipped.append(target)
            nxt = [
                e.target
                for e in a.successors.get(target, ())
                if not (target in a.loops and e.action == CONTINUE)
            ]
            stack.extend((target, t) for t in reversed(list(dict.fromkeys(nxt))))


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
