"""The graph facts of a blueprint that routing, joins and validation rely on.

Everything here keeps declaration order (of nodes, then of edges), so the
same blueprint always yields the same tuples. Edges whose source or target is
not a node are left out; validation reports them as ``dangling-edge``.

Loops: a ``loop-controller`` node's ``continue`` edges enter its body (every
node reachable from them without passing the controller again); the body's
edges back to the controller close the loop. Each pass of the body runs at an
iteration of its own (the ``iteration`` of every node record); ``Loop`` says
which nodes those are, and ``target_iteration`` which iteration an edge leads to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.blueprint.model import Blueprint, EdgeSpec

__all__ = ["LOOP_USES", "Analysis", "Loop", "analyze", "find_cycles"]

#: The built-in that makes a loop (its ``continue`` edges enter the body).
LOOP_USES = "loop-controller"
#: The action of a loop controller's edges into its body.
CONTINUE = "continue"


@dataclass(frozen=True, kw_only=True)
class Loop:
    """A loop: its controller, the body the ``continue`` edges enter, and the edges back."""

    controller: str
    #: Targets of the controller's ``continue`` edges (the body's first nodes).
    entries: tuple[str, ...]
    #: Nodes reachable from the entries without passing the controller, in declaration order.
    body: tuple[str, ...]
    #: Body nodes with an edge back to the controller (each pass ends there).
    ends: tuple[str, ...]


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
    #: Loops by controller id.
    loops: Mapping[str, Loop]
    #: Each loop body node's controller (a node in no loop body is not here).
    loop_of: Mapping[str, str]

    def target_iteration(self, source: str, target: str, iteration: int) -> int:
        """The iteration an edge ``source -> target`` taken at ``iteration`` leads to.

        An edge back to a loop's controller starts its next pass (``iteration + 1``);
        an edge into a body, or inside one, stays in the pass; any other edge leads
        out of every loop (iteration 0: loops do not nest).
        """
        if target in self.loops:
            return iteration + 1 if self.loop_of.get(source) == target else 0
        owner = self.loop_of.get(target)
        if owner is not None and (source == owner or self.loop_of.get(source) == owner):
            return iteration
        return 0


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
    loops = _loops(bp, ids, succ)
    loop_of = {n: c for c, loop in loops.items() for n in loop.body}
    start = tuple(i for i in ids if not pred[i] and i not in fallback_targets)
    if not start:
        start = _cycle_entries(bp, ids, known)
    return Analysis(
        start_nodes=start,
        terminal_nodes=tuple(i for i in ids if not succ[i]),
        # A loop controller has its outside predecessor and its body's ends, but each of its
        # iterations is reached by one of them: it is not a join.
        join_nodes=tuple(i for i in ids if len(pred[i]) > 1 and i not in loops),
        successors=MappingProxyType({i: tuple(es) for i, es in succ.items()}),
        predecessors=MappingProxyType({i: tuple(ps) for i, ps in pred.items()}),
        fallback_targets=fallback_targets,
        reachable=_reachable(start, succ, fallback_of),
        topological_order=_topological(ids, succ, pred),
        loops=MappingProxyType(loops),
        loop_of=MappingProxyType(loop_of),
    )


def _loops(bp: Blueprint, ids: list[str], succ: Mapping[str, list[EdgeSpec]]) -> dict[str, Loop]:
    loops: dict[str, Loop] = {}
    for node in bp.nodes:
        if node.uses != LOOP_USES or node.id in loops or node.id not in succ:
            continue
        entries = tuple(dict.fromkeys(e.target for e in succ[node.id] if e.action == CONTINUE))
        seen: set[str] = set()
        stack = list(entries)
        while stack:
            current = stack.pop()
            if current == node.id or current in seen:
                continue
            seen.add(current)
            stack.extend(e.target for e in succ[current])
        body = tuple(i for i in ids if i in seen)
        ends = tuple(i for i in body if any(e.target == node.id for e in succ[i]))
        loops[node.id] = Loop(controller=node.id, entries=entries, body=body, ends=ends)
    return loops


def _cycle_entries(bp: Blueprint, ids: list[str], known: set[str]) -> tuple[str, ...]:
    """Where a graph without a start node starts: as flowcraft, one node per cycle.

    ``metadata.cycleEntryPoints`` names it (the first listed node of each cycle);
    else it is the cycle's first node in declaration order.
    """
    listed = [e for e in bp.metadata.get("cycleEntryPoints") or () if e in known]
    starts: list[str] = []
    position = {i: n for n, i in enumerate(ids)}
    for path in find_cycles(bp, loops_close=False):
        members = set(path)
        chosen = next((e for e in listed if e in members), None)
        starts.append(chosen or min(members, key=position.__getitem__))
    return tuple(dict.fromkeys(starts))


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


def find_cycles(bp: Blueprint, *, loops_close: bool = True) -> list[list[str]]:
    """One cycle path per strongly connected group, e.g. ``['a', 'b', 'a']``.

    Fallback links count as edges: a fallback that leads back to its primary
    would run a node twice in one iteration. With ``loops_close`` a loop
    controller's ``continue`` edges do not count: such a cycle is a loop, each
    pass an iteration of its own, not a node running twice in one.
    """
    ids = list(dict.fromkeys(n.id for n in bp.nodes))
    known = set(ids)
    controllers = {n.id for n in bp.nodes if n.uses == LOOP_USES} if loops_close else set()
    graph: dict[str, list[str]] = {i: [] for i in ids}
    for edge in bp.edges:
        if edge.source in controllers and edge.action == CONTINUE:
            continue
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
