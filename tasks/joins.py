"""Join policies and the shapes that can run as a Celery chord.

The state store is the truth for joins: arrivals are a set keyed by
predecessor, and a join fires through one conditional write. This module holds
the pure decisions: whether an arrival set satisfies a join's policy, which
fan-outs can use a chord as their fast path, and which nodes lose a race.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

from state.constants import ARRIVAL_COMPLETED, ARRIVAL_FAILED, ARRIVAL_SKIPPED
from tasks.blueprint import BUILTIN_USES, Blueprint

__all__ = [
    "TOLERANT",
    "ChordRegion",
    "Decision",
    "chord_region",
    "decide",
    "failure_is_tolerated",
    "losers",
]

#: Strategies under which a failed branch is an arrival, not the run's failure.
TOLERANT = frozenset({"all-settled", "any", "race", "quorum"})
#: Strategies that cancel the branches still running once the join fires.
CANCELS_LOSERS = frozenset({"any", "race", "quorum"})


@dataclass(frozen=True)
class Decision:
    """What a join does with the arrivals it has."""

    action: Literal["wait", "fire", "skip", "fail"]
    reason: str = ""


def decide(bp: Blueprint, join_id: str, arrivals: dict[str, str]) -> Decision:
    """Apply ``join_id``'s ``joinStrategy`` to its arrival set."""
    cfg = bp.node(join_id).config
    preds = bp.analysis.predecessors[join_id]
    arrived = {p: o for p, o in arrivals.items() if p in preds}
    done = [o for o in arrived.values() if o == ARRIVAL_COMPLETED]
    failed = [p for p, o in arrived.items() if o == ARRIVAL_FAILED]
    complete = len(arrived) == len(preds)
    all_skipped = complete and all(o == ARRIVAL_SKIPPED for o in arrived.values())
    strategy = cfg.join_strategy
    if strategy == "all":
        if failed:
            return Decision("fail", f"join {join_id!r}: branch {failed[0]!r} failed")
        if not complete:
            return Decision("wait")
        return Decision("skip") if all_skipped else Decision("fire")
    if strategy == "all-settled":
        if not complete:
            return Decision("wait")
        return Decision("skip") if all_skipped else Decision("fire")
    need = 1 if strategy in ("any", "race") else int(cfg.quorum or 1)
    if len(done) >= need:
        return Decision("fire")
    still_possible = len(done) + (len(preds) - len(arrived))
    if still_possible >= need:
        return Decision("wait")
    if all_skipped:
        return Decision("skip")
    return Decision(
        "fail",
        f"join {join_id!r} ({strategy}) needs {need} completed branch(es); "
        f"only {len(done)} completed and {len(preds) - len(arrived)} can still arrive",
    )


@dataclass(frozen=True)
class ChordRegion:
    """A fan-out whose branches are chains of plain nodes meeting at one ``all`` join."""

    fork: str
    join: str
    #: Branch head -> the chain of nodes of that branch, head first.
    chains: dict[str, tuple[str, ...]]


def _chain(bp: Blueprint, head: str) -> tuple[tuple[str, ...], str | None]:
    """Follow plain single-entry nodes from ``head``; returns the chain and where it ends."""
    a = bp.analysis
    chain: list[str] = []
    node = head
    while True:
        spec = bp.node(node)
        # Waits, sleeps and fallbacks leave the chord's shape: they go on outside it.
        if spec.uses in BUILTIN_USES or spec.config.fallback or len(a.predecessors[node]) != 1:
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
        if bp.node(join).config.join_strategy == "all" and ends == set(a.predecessors[join]):
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
    """Nodes that only lead into ``join_id``: cancelled when a race or quorum join fires."""
    if bp.node(join_id).config.join_strategy not in CANCELS_LOSERS:
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
        if n in a.join_nodes:
            if bp.node(n).config.join_strategy not in TOLERANT:
                return False
            continue
        nxt = [e.target for e in a.successors.get(n, ())]
        if not nxt:
            return False
        stack.extend(nxt)
    return True
