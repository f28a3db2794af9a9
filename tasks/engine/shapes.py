"""The graph shapes joins care about: a join's decision, chord regions, losers, tolerance.

Pure functions of a blueprint (and an arrival set). The strategy of each join
(``tasks.joins``) says what it tolerates, cancels and allows; this module
applies that to the blueprint's graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from tasks.blueprint import Blueprint
from tasks.builtins import builtin
from tasks.joins import Arrivals, Decision, JoinStrategy, join_strategy

__all__ = [
    "ChordRegion",
    "chord_region",
    "decide",
    "failure_is_tolerated",
    "losers",
    "strategy_of",
]


def strategy_of(bp: Blueprint, join_id: str) -> JoinStrategy:
    """The strategy of join ``join_id`` (validation guarantees it exists)."""
    return join_strategy(bp.node(join_id).config.join_strategy)


def decide(bp: Blueprint, join_id: str, arrivals: dict[str, str]) -> Decision:
    """Apply ``join_id``'s strategy to its arrival set (predecessor id to outcome)."""
    preds = tuple(bp.analysis.predecessors[join_id])
    arrived = {p: o for p, o in arrivals.items() if p in preds}
    options = bp.node(join_id).config.join_options
    return strategy_of(bp, join_id).decide(options, Arrivals(join_id, preds, arrived))


@dataclass(frozen=True)
class ChordRegion:
    """A fan-out whose branches are chains of plain nodes meeting at one chord-eligible join."""

    fork: str
    join: str
    #: Branch head -> the chain of nodes of that branch, head first.
    chains: dict[str, tuple[str, ...]]


def _plain(bp: Blueprint, node: str) -> bool:
    spec = bp.node(node)
    # Waits, sleeps and fallbacks leave the chord's shape: they go on outside it.
    special = builtin(spec.uses)
    return (special is None or special.chord_safe) and not spec.config.fallback


def _chain(bp: Blueprint, head: str) -> tuple[tuple[str, ...], str | None]:
    """Follow plain single-entry nodes from ``head``; returns the chain and where it ends."""
    a = bp.analysis
    chain: list[str] = []
    node = head
    while True:
        if not _plain(bp, node) or len(a.predecessors[node]) != 1:
            return tuple(chain), None
        chain.append(node)
        targets = list(dict.fromkeys(e.target for e in a.successors.get(node, ())))
        if len(targets) != 1:
            return tuple(chain), None
        nxt = targets[0]
        if nxt in a.join_nodes:
            return tuple(chain), nxt
        node = nxt


@cache
def _regions(bp: Blueprint) -> dict[str, ChordRegion]:
    regions: dict[str, ChordRegion] = {}
    a = bp.analysis
    for fork in a.topological_order:
        heads = list(dict.fromkeys(e.target for e in a.successors.get(fork, ())))
        if len(heads) < 2:
            continue
        chains: dict[str, tuple[str, ...]] = {}
        joins: set[str | None] = set()
        for head in heads:
            chain, end = _chain(bp, head)
            chains[head] = chain
            joins.add(end)
        if len(joins) != 1 or None in joins:
            continue
        join = joins.pop()
        assert join is not None
        ends = {c[-1] for c in chains.values() if c}
        if strategy_of(bp, join).chord_eligible and ends == set(a.predecessors[join]):
            regions[fork] = ChordRegion(fork=fork, join=join, chains=chains)
    return regions


def chord_region(bp: Blueprint, fork: str) -> ChordRegion | None:
    """The chord region that starts at ``fork``, if its shape allows one."""
    return _regions(bp).get(fork)


def _ancestors(bp: Blueprint, node: str) -> set[str]:
    seen: set[str] = set()
    stack = list(bp.analysis.predecessors.get(node, ()))
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(bp.analysis.predecessors.get(n, ()))
    return seen


def losers(bp: Blueprint, join_id: str) -> frozenset[str]:
    """Nodes that only lead into ``join_id``: cancelled when a join that cancels losers fires."""
    if not strategy_of(bp, join_id).cancels_losers:
        return frozenset()
    ups = _ancestors(bp, join_id)
    inside = ups | {join_id}
    # Nodes every branch descends from (the fork and before) are shared, not losers.
    per_branch = [_ancestors(bp, p) | {p} for p in bp.analysis.predecessors[join_id]]
    shared = set.intersection(*per_branch) if per_branch else set()
    return frozenset(
        n
        for n in ups - shared
        if all(e.target in inside for e in bp.analysis.successors.get(n, ()))
    )


def failure_is_tolerated(bp: Blueprint, node_id: str) -> bool:
    """Whether every path from a failed node ends at a join that tolerates failed branches."""
    a = bp.analysis
    stack = [e.target for e in a.successors.get(node_id, ())]
    if not stack:
        return False
    seen: set[str] = set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in a.loops:
            return False  # a loop's pass that cannot end makes the loop fail, not a branch
        if n in a.join_nodes:
            if not strategy_of(bp, n).tolerates_failure:
                return False
            continue
        nxt = [e.target for e in a.successors.get(n, ())]
        if not nxt:
            return False
        stack.extend(nxt)
    return True
