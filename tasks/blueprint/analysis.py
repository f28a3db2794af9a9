"""The graph facts of a blueprint that routing, joins and validation rely on.

Everything here keeps declaration order (of nodes, then of edges), so the
same blueprint always yields the same tuples. Edges whose source or target is
not a node are left out; validation reports them as ``dangling-edge``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.blueprint.model import Blueprint, EdgeSpec

__all__ = ["Analysis", "analyze", "find_cycles"]


@dataclass(frozen=True, kw_only=True)
class Analysis:
    """Start, terminal and join nodes, and adjacency, of one blueprint."""

    #: Nodes without incoming edges that are not fallback-only targets; a run starts here.
    start_nodes: tuple[str, ...]
    #: Nodes without outgoing edges.
    terminal_nodes: tuple[str, ...]
    #: Nodes with more than one distinct predecessor.
    join_nodes: tuple[str, ...]
    #: Every node's outgoing edges, in declaration order (empty tuple when none).
    successors: Mapping[str, tuple[EdgeSpec, ...]]
    #: Every node's distinct predecessors, in order of the edges that name them.
    predecessors: Mapping[str, tuple[str, ...]]
    #: Nodes named as some node's ``fallback``.
    fallback_targets: frozenset[str]
    #: Nodes that can run: reachable from a start node by edges or fallbacks.
    reachable: frozenset[str]
    #: Nodes ordered so every edge goes forward (declaration order among equals);
    #: nodes on a cycle are missing.
    topological_order: tuple[str, ...]


def analyze(bp: Blueprint) -> Analysis:
    """Compute the ``Analysis`` of ``bp`` (use ``bp.analysis``, which caches it)."""
    ids = list(dict.fromkeys(n.id for n in bp.nodes))
    known = set(ids)
    succ: dict[str, list[EdgeSpec]] = {i: [] for i in ids}
    pred: dict[str, dict[str, None]] = {i: {} for i in ids}
    for edge in bp.edges:
        if edge.source in known and edge.target in known:
            succ[edge.source].append(edge)
            pred[edge.target][edge.source] = None
    fallback_of = _fallback_links(bp, known)
    fallback_targets = frozenset(t for targets in fallback_of.values() for t in targets)
    start = tuple(i for i in ids if not pred[i] and i not in fallback_targets)
    return Analysis(
        start_nodes=start,
        terminal_nodes=tuple(i for i in ids if not succ[i]),
        join_nodes=tuple(i for i in ids if len(pred[i]) > 1),
        successors=MappingProxyType({i: tuple(es) for i, es in succ.items()}),
        predecessors=MappingProxyType({i: tuple(ps) for i, ps in pred.items()}),
        fallback_targets=fallback_targets,
        reachable=_reachable(start, succ, fallback_of),
        topological_order=_topological(ids, succ, pred),
    )


def _fallback_links(bp: Blueprint, known: set[str]) -> dict[str, list[str]]:
    links: dict[str, list[str]] = {}
    for node in bp.nodes:
        target = node.config.fallback
        if target is not None and target in known and target != node.id:
            links.setdefault(node.id, []).append(target)
    return links


def _reachable(
    start: tuple[str, ...],
    succ: Mapping[str, list[EdgeSpec]],
    fallback_of: Mapping[str, list[str]],
) -> frozenset[str]:
    seen = set(start)
    stack = list(reversed(start))
    while stack:
        current = stack.pop()
        nxt = [e.target for e in succ[current]] + fallback_of.get(current, [])
        for target in nxt:
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return frozenset(seen)


def _topological(
    ids: list[str],
    succ: Mapping[str, list[EdgeSpec]],
    pred: Mapping[str, Mapping[str, None]],
) -> tuple[str, ...]:
    indegree = {i: len(pred[i]) for i in ids}
    position = {i: n for n, i in enumerate(ids)}
    ready = [i for i in ids if indegree[i] == 0]
    order: list[str] = []
    while ready:
        ready.sort(key=position.__getitem__)
        current = ready.pop(0)
        order.append(current)
        for target in dict.fromkeys(e.target for e in succ[current]):
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
    return tuple(order)


def find_cycles(bp: Blueprint) -> list[list[str]]:
    """One cycle path per strongly connected group, e.g. ``['a', 'b', 'a']``.

    Fallback links count as edges: a fallback that leads back to its primary
    would run a node twice in one iteration.
    """
    ids = list(dict.fromkeys(n.id for n in bp.nodes))
    known = set(ids)
    graph: dict[str, list[str]] = {i: [] for i in ids}
    for edge in bp.edges:
        if edge.source in known and edge.target in known:
            graph[edge.source].append(edge.target)
    for source, targets in _fallback_links(bp, known).items():
        graph[source].extend(targets)
    cycles: list[list[str]] = []
    for component in _strongly_connected(ids, graph):
        head = component[0]
        if len(component) == 1 and head not in graph[head]:
            continue
        cycles.append(_cycle_through(head, graph, set(component)))
    return cycles


def _strongly_connected(ids: list[str], graph: Mapping[str, list[str]]) -> list[list[str]]:
    # Iterative Tarjan: blueprints can be long chains, deeper than Python's recursion limit.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    position = {i: n for n, i in enumerate(ids)}
    for root in ids:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = graph[node]
            if child < len(targets):
                work.append((node, child + 1))
                target = targets[child]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(sorted(component, key=position.__getitem__))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    found.sort(key=lambda comp: position[comp[0]])
    return found


def _cycle_through(head: str, graph: Mapping[str, list[str]], members: set[str]) -> list[str]:
    # Breadth-first inside the component gives the shortest loop back to ``head``.
    parents: dict[str, str] = {}
    queue = [head]
    while queue:
        current = queue.pop(0)
        for target in graph[current]:
            if target not in members:
                continue
            if target == head:
                chain = [current]
                while chain[-1] != head:
                    chain.append(parents[chain[-1]])
                return [*reversed(chain), head]
            if target not in parents:
                parents[target] = current
                queue.append(target)
    return [head, head]  # pragma: no cover - a component always loops back to its head
