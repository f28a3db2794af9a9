"""What a node reads of its run: its input, earlier outputs by id, and the scope of expressions.

flowcraft's meaning (``docs/blueprints.md`` has the rules and where flowbridge
differs): a node's input is what its ``inputs`` mapping selects, else what
flows along the edge that brought it (the source's output, or the edge's
``transform`` of it); with several taken edges, the last in declaration
order. A start node gets the run's input, a fallback the input of the node it
stands in for. Conditions and transforms see each completed node's output
under its id, then the run context's keys.

Loops: a loop body's nodes are read at the pass being run; the controller
reads the pass before it; a node after the loop reads the last pass (the
controller records its iteration in the context under ``LOOP_KEY``).
Everything here is read lazily, once per attempt.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from state.constants import NODE_COMPLETED, NODE_FAILED
from state.records import NodeState
from tasks.blueprint import EdgeSpec, Names, compile_condition, condition_scope
from tasks.blueprint.analysis import CONTINUE
from tasks.constants import INTERNAL_PREFIX, LOOP_KEY
from tasks.context import RunContext
from tasks.engine.scope import RunScope
from tasks.joins import join_strategy

__all__ = ["INTERNAL_PREFIX", "LOOP_KEY", "RunData", "loop_iteration", "walk"]


_OUTPUTS = "_outputs."


def walk(value: Any, path: str) -> Any:
    """Follow ``a.b.0`` through mappings and lists; None at the first missing hop."""
    for hop in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(hop)
        elif isinstance(value, list) and hop.isdigit() and int(hop) < len(value):
            value = value[int(hop)]
        else:
            return None
    return value


def loop_iteration(context: Mapping[str, Any], controller: str) -> int:
    """The latest iteration loop ``controller`` has run (0 before its first)."""
    value = context.get(LOOP_KEY + controller)
    return value if isinstance(value, int) else 0


class RunData:
    """One attempt's view of its run: records, outputs, context and the node's input."""

    def __init__(
        self,
        scope: RunScope,
        node_id: str,
        iteration: int,
        context: RunContext,
        *,
        item_input: Callable[[], Any] | None = None,
    ) -> None:
        """Read for ``node_id`` at ``iteration``; ``context`` holds this attempt's writes."""
        self.scope = scope
        self.node_id = node_id
        self.iteration = iteration
        self.context = context
        self._item_input = item_input
        #: Records read so far, by iteration (a node read and absent is there as None).
        self._records: dict[int, dict[str, NodeState | None]] = {}

    # --- records and iterations ------------------------------------------------------------
    def read(self, node_ids: Iterable[str], iteration: int) -> None:
        """Read the records of ``node_ids`` at ``iteration`` not read yet, in one call."""
        have = self._records.setdefault(iteration, {})
        missing = [n for n in dict.fromkeys(node_ids) if n not in have]
        if missing:
            found = self.scope.store.get_nodes(self.scope.run_id, missing, iteration)
            have.update({n: found.get(n) for n in missing})

    def record(self, node_id: str, iteration: int | None) -> NodeState | None:
        """One node's record at ``iteration`` (None: none, or no such iteration)."""
        if iteration is None:
            return None
        self.read((node_id,), iteration)
        return self._records[iteration][node_id]

    def visible_iteration(self, node_id: str) -> int | None:
        """The iteration of ``node_id`` this reader sees (None: none yet)."""
        a = self.scope.bp.analysis
        owner = a.loop_of.get(node_id) or (node_id if node_id in a.loops else None)
        if owner is None:
            return 0
        me = self.node_id
        if a.loop_of.get(me) == owner:
            # Inside the body: this pass (the controller itself: the one that started it).
            return self.iteration
        if me == owner:
            # The controller: the pass that ended on it.
            back = self.iteration - 1 if node_id != owner else self.iteration
            return back if back >= 0 else None
        # After the loop: its last pass (the controller's last iteration, if that continued).
        last = loop_iteration(self.context.as_dict(), owner)
        if node_id == owner:
            return last
        controller = self.record(owner, last)
        continued = controller is not None and controller.action == CONTINUE
        return last if continued else (last - 1 if last >= 1 else None)

    def source_iteration(self, source: str) -> int | None:
        """The iteration of ``source`` whose edge brought this reader (None: it cannot have)."""
        a = self.scope.bp.analysis
        me, it = self.node_id, self.iteration
        if me in a.loops:
            if a.loop_of.get(source) == me:
                return it - 1 if it >= 1 else None
            return 0 if it == 0 else None
        owner = a.loop_of.get(me)
        if owner is not None:
            return it
        if source in a.loops or a.loop_of.get(source) is not None:
            return loop_iteration(self.context.as_dict(), a.loop_of.get(source) or source)
        return 0

    @functools.cached_property
    def outputs(self) -> dict[str, Any]:
        """Every completed node's output this reader sees, by id."""
        out: dict[str, Any] = {}
        wanted: dict[int, list[str]] = {}
        for node_id in self.scope.bp.node_ids:
            at = self.visible_iteration(node_id)
            if at is not None:
                wanted.setdefault(at, []).append(node_id)
        for at, ids in wanted.items():
            self.read(ids, at)  # one read per iteration, not one per node
        for node_id in self.scope.bp.node_ids:
            rec = self.record(node_id, self.visible_iteration(node_id))
            if rec is not None and rec.status == NODE_COMPLETED:
                out[node_id] = rec.output
        return out

    # --- scopes ----------------------------------------------------------------------------
    def condition_names(self, output: Any, action: str | None) -> Names:
        """What a condition on this node's result sees (its own output under its id too)."""
        return condition_scope(
            output=output,
            action=action,
            outputs=lambda: {**self.outputs, self.node_id: output},
            context=self.context.as_dict,
        )

    def view(self) -> Names:
        """Node outputs by id over the context's keys: ``context`` in an expression."""
        return Names(lambda: self.outputs, self.context.as_dict)

    def scope_names(self) -> Names:
        """What an expression outside an edge sees (a loop's condition).

        The view, and the view again as ``context`` (as flowcraft's evaluator binds it).
        """
        view = self.view()
        return Names(view, {"context": view})

    # --- the node's input ------------------------------------------------------------------
    @functools.cached_property
    def input(self) -> Any:
        """The node's input, as flowcraft defines it (see the module doc)."""
        if self._item_input is not None:
            return self._item_input()
        bp = self.scope.bp
        spec = bp.node(self.node_id)
        edge, source = self._taken_edge()
        if edge is not None and edge.transform is not None:
            value = source
            # flowcraft: a string mapping naming another node is what the transform reads.
            named_node = isinstance(spec.inputs, str) and (
                spec.inputs.startswith("_") or spec.inputs.partition(".")[0] in self.outputs
            )
            if isinstance(spec.inputs, str) and named_node and spec.inputs != edge.source:
                named = self.resolve(spec.inputs)
                value = source if named is None else named
            view = self.view()
            names = Names({"input": value}, view, {"context": view})
            return compile_condition(edge.transform).value(names)
        if spec.inputs is not None:
            return self.mapped(spec.inputs)
        if edge is not None:
            return source
        if not bp.analysis.predecessors.get(self.node_id):
            return self._stand_in_input()
        return None

    def mapped(self, inputs: str | Mapping[str, str]) -> Any:
        """What an ``inputs`` mapping selects."""
        if isinstance(inputs, str):
            return self.resolve(inputs)
        return {key: self.resolve(path) for key, path in inputs.items()}

    def resolve(self, path: str) -> Any:
        """One ``inputs`` path: a node id (``a``, ``a.b.c``, ``_outputs.a``) or a context key."""
        outputs = self.outputs
        if path.startswith(_OUTPUTS):
            return outputs.get(path[len(_OUTPUTS) :])
        if path.startswith("_"):
            return self.context.get(path)
        if path in outputs:
            return outputs[path]
        base, dot, rest = path.partition(".")
        if dot and base in outputs:
            return walk(outputs[base], rest)
        context = self.context.as_dict()
        if path in context:
            return context[path]
        return walk(context.get(base), rest) if dot else None

    def _taken_edge(self) -> tuple[EdgeSpec | None, Any]:
        """The edge that brought this node its input, and what came along it.

        Of the edges completed predecessors took to it, flowcraft's input is the
        one processed last: here the predecessor that completed last (ties: the last
        in declaration order), and for a join that fires on the first completion
        (``any``, ``race``, ``quorum``) the one that completed first. An edge of a
        failed node was taken by its fallback, if that ran in its place.
        """
        bp = self.scope.bp
        found: list[tuple[float, int, EdgeSpec, Any]] = []
        incoming = [e for e in bp.edges if e.target == self.node_id]
        by_iteration: dict[int, list[str]] = {}
        for edge in incoming:
            at = self.source_iteration(edge.source)
            if at is not None:
                fallback = bp.node(edge.source).config.fallback
                by_iteration.setdefault(at, []).extend(
                    [edge.source, *([fallback] if fallback else [])]
                )
        for at, ids in by_iteration.items():
            self.read(ids, at)  # the predecessors only, in one read
        for index, edge in enumerate(bp.edges):
            if edge.target != self.node_id:
                continue
            at = self.source_iteration(edge.source)
            rec = self.record(edge.source, at)
            if rec is not None and rec.status == NODE_FAILED:
                fallback = bp.node(edge.source).config.fallback
                rec = None if fallback is None else self.record(fallback, at)
            if rec is None or rec.status != NODE_COMPLETED or self.node_id not in rec.edges_taken:
                continue
            if rec.action is not None and edge.action not in (None, rec.action):
                continue
            found.append((rec.updated_at, index, edge, rec.output))
        if not found:
            return None, None
        if self._first_wins():
            first = min(t for t, _, _, _ in found)
            _, _, edge, output = max(f for f in found if f[0] == first)
        else:
            _, _, edge, output = max(found)
        return edge, output

    def _first_wins(self) -> bool:
        if self.node_id not in self.scope.bp.analysis.join_nodes:
            return False
        return join_strategy(self.scope.bp.node(self.node_id).config.join_strategy).first_wins

    def _stand_in_input(self) -> Any:
        """A start node gets the run's input; a fallback the input of the primary it replaced."""
        bp = self.scope.bp
        for primary in bp.nodes:
            if primary.config.fallback != self.node_id:
                continue
            rec = self.record(primary.id, self.iteration)
            if rec is not None and rec.status == NODE_FAILED:
                stand_in = RunData(self.scope, primary.id, self.iteration, self.context)
                stand_in._records = self._records  # what was read holds for both
                return stand_in.input
        return self.scope.run.input
