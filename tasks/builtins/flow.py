"""``subflow``, ``loop-controller`` and ``webhook``: flowcraft's built-ins that shape a run.

- ``subflow`` runs another blueprint as a child run of its own (its own run id,
  its parent recorded): the node parks until the child finishes, then completes
  with the child's output, or fails with its error (so retries and a fallback
  apply; each attempt is a new child run).
- ``loop-controller`` decides, each time a pass of its loop ends, whether the
  loop goes on (``continue``) or ends (``break``), by ``params.condition`` over
  the run's scope; ``params.maxIterations`` ends a loop that would not.
- ``webhook`` returns the URL and the event name an HTTP call for this node
  will become (the web process's ``POST /webhooks/<run>/<node>`` turns the call
  into that event; ``tasks.webhooks`` signs the URL); a ``wait`` on the event is
  what waits, as in flowcraft.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from tasks.builtins.base import (
    Builtin,
    BuiltinCall,
    BuiltinResult,
    ChildRun,
    positive_int_problem,
    text_map_problem,
)
from tasks.errors import NodeError
from tasks.webhooks import webhook_event

__all__ = ["DEFAULT_MAX_ITERATIONS", "LoopController", "Subflow", "Webhook", "child_event"]

#: How many passes a loop may make unless ``params.maxIterations`` says otherwise.
DEFAULT_MAX_ITERATIONS = 1000


def child_event(child_run_id: str) -> str:
    """The event a child run's end is delivered to its parent as."""
    return f"subflow:{child_run_id}"


class Subflow(Builtin):
    """Run ``params.blueprintId`` as a child run; complete with its output."""

    uses = "subflow"
    params: ClassVar[Mapping[str, str]] = {
        "blueprintId": "the blueprint the child run runs (its newest version)",
        "inputs": "{child context key: parent context key or node id} (else: this node's input)",
        "outputs": "{parent context key: child node id or context key}",
    }

    def check(self, params: Mapping[str, Any]) -> list[str]:
        """``blueprintId`` is required; the mappings are objects of names."""
        problems: list[str] = []
        bp_id = params.get("blueprintId")
        if not (isinstance(bp_id, str) and bp_id):
            problems.append(
                f"params.blueprintId is required (the child's blueprint), got {bp_id!r}"
            )
        return problems + text_map_problem(params, "inputs") + text_map_problem(params, "outputs")

    def run(self, call: BuiltinCall) -> BuiltinResult:
        """Start the child (once per attempt) and park; when it ended, map its result."""
        child_id = call.child_run_id()
        wake = call.wakeup()
        if wake is None or wake.event_name != child_event(child_id):
            # First delivery of this attempt (an earlier attempt's wake-up is not ours).
            call.start_child(str(call.params["blueprintId"]), self._child_input(call))
            wake = call.suspend(event=child_event(child_id))
            if wake is None:
                return None
        child = call.child(child_id)
        if child is None:
            raise NodeError(f"subflow {call.node_id!r}: its child run {child_id!r} is gone")
        if child.status != "completed":
            raise NodeError(
                f"subflow {call.node_id!r}: child run {child_id!r} of blueprint "
                f"{call.params['blueprintId']!r} {child.status}: {child.error}"
            )
        return self._output(call, child), None

    @staticmethod
    def _child_input(call: BuiltinCall) -> Any:
        inputs = call.params.get("inputs")
        if not isinstance(inputs, Mapping):
            return call.input
        # flowcraft: each child key gets the parent's context key, else that node's output.
        out: dict[str, Any] = {}
        for child_key, source in inputs.items():
            value = call.context.get(source)
            out[child_key] = call.evaluate(f"context[{source!r}]") if value is None else value
        return out

    @staticmethod
    def _output(call: BuiltinCall, child: ChildRun) -> Any:
        outputs = call.params.get("outputs")
        if isinstance(outputs, Mapping):
            mapped: dict[str, Any] = {}
            for parent_key, child_key in outputs.items():
                # flowcraft: the child node's output, else the child's context key.
                value = child.outputs.get(child_key)
                if value is None:
                    value = child.context.get(child_key)
                call.context.set(parent_key, value)
                mapped[parent_key] = value
            return mapped
        if len(child.terminals) == 1:
            return next(iter(child.terminals.values()))
        return dict(child.terminals)


class LoopController(Builtin):
    """``continue`` while ``params.condition`` holds, else ``break``; passes its input on."""

    uses = "loop-controller"
    params: ClassVar[Mapping[str, str]] = {
        "condition": "an expression over the run's scope; the loop goes on while it holds",
        "maxIterations": f"the most passes the loop may make (default {DEFAULT_MAX_ITERATIONS})",
    }

    def check(self, params: Mapping[str, Any]) -> list[str]:
        """The condition is required; ``maxIterations`` is a positive integer."""
        condition = params.get("condition")
        problems = []
        if not (isinstance(condition, str) and condition.strip()):
            problems.append(f"params.condition is required (an expression), got {condition!r}")
        return problems + positive_int_problem(params, "maxIterations")

    def run(self, call: BuiltinCall) -> BuiltinResult:
        """Decide this iteration; a loop past ``maxIterations`` fails, naming its condition."""
        condition = str(call.params.get("condition", ""))
        if not call.evaluate(condition):
            return call.input, "break"
        limit = call.params.get("maxIterations", DEFAULT_MAX_ITERATIONS)
        if call.iteration >= limit:
            raise NodeError(
                f"loop {call.node_id!r} reached maxIterations={limit} and its condition "
                f"{condition!r} still holds (raise params.maxIterations, or check the condition)",
                retryable=False,
            )
        return call.input, "continue"


class Webhook(Builtin):
    """Complete with ``{url, event}``: where to call, and the event a ``wait`` waits for."""

    uses = "webhook"

    def run(self, call: BuiltinCall) -> BuiltinResult:
        """The URL and event of this node (flowcraft: ``webhook:<node id>``)."""
        return {"url": call.webhook_url(), "event": webhook_event(call.node_id)}, None
