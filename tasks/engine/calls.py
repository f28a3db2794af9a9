"""The engine side of ``tasks.builtins.BuiltinCall``: what one built-in attempt may do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from state.records import Wakeup
from tasks.blueprint import compile_condition
from tasks.builtins import ChildRun
from tasks.context import RunContext
from tasks.engine.batch import gather_outputs, put_items
from tasks.engine.children import MAX_DEPTH, child_run, child_run_id, parent_link
from tasks.engine.inputs import RunData
from tasks.engine.scope import Attempt
from tasks.errors import NodeError, UnknownBlueprintError
from tasks.webhooks import webhook_url

__all__ = ["EngineCall"]


@dataclass
class EngineCall:
    """One attempt of a built-in node, with its run's data."""

    att: Attempt
    data: RunData

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.att.scope.run_id

    @property
    def node_id(self) -> str:
        """The node's id."""
        return self.att.node_id

    @property
    def iteration(self) -> int:
        """The node's iteration."""
        return self.att.iteration

    @property
    def attempt(self) -> int:
        """The attempt's number."""
        return self.att.number

    @property
    def params(self) -> Mapping[str, Any]:
        """The node's params."""
        return self.att.spec.params

    @property
    def input(self) -> Any:
        """The node's input."""
        return self.data.input

    @property
    def context(self) -> RunContext:
        """The run context (writes commit with the completion)."""
        return self.data.context

    def now(self) -> float:
        """The engine's clock."""
        return self.att.scope.rt.clock()

    def wakeup(self) -> Wakeup | None:
        """What woke the node."""
        return self.att.scope.store.get_wakeup(self.run_id, self.node_id, self.iteration)

    def suspend(self, *, event: str | None = None, due_at: float | None = None) -> Wakeup | None:
        """Park the node on ``event`` and/or until ``due_at``."""
        store = self.att.scope.store
        return store.suspend_node(
            self.run_id, self.node_id, self.iteration, event=event, due_at=due_at
        )

    def schedule_wake(self, delay_s: float) -> None:
        """A Celery countdown as the wake-up call of a short timer."""
        scope = self.att.scope
        if delay_s <= scope.rt.settings.max_delay_s:
            scope.dispatch(self.node_id, iteration=self.iteration, countdown=delay_s, wake=True)

    def evaluate(self, expression: str) -> Any:
        """An expression over the run's scope."""
        return compile_condition(expression).value(self.data.scope_names())

    def child_run_id(self) -> str:
        """This attempt's child run id."""
        return child_run_id(
            self.run_id, self.node_id, self.iteration, self.attempt, self.att.scope.run.attempt
        )

    def start_child(self, blueprint_id: str, run_input: Any) -> str:
        """Start this attempt's child run (idempotent on its id)."""
        from tasks.engine.lifecycle import start_run

        scope = self.att.scope
        link = parent_link(scope.run, self.node_id, self.iteration)
        if link["depth"] > MAX_DEPTH:
            raise NodeError(
                f"subflow {self.node_id!r}: subflows nest more than {MAX_DEPTH} deep "
                "(does a blueprint run itself?)",
                retryable=False,
            )
        try:
            bp = scope.rt.blueprints.get(blueprint_id)
        except UnknownBlueprintError as exc:
            raise NodeError(
                f"Sub-blueprint {blueprint_id!r} not found in the registry: {exc}",
                retryable=False,
            ) from None
        child_id = self.child_run_id()
        created, _ = start_run(scope.rt, bp, run_input, run_id=child_id, parent=link)
        if created:
            scope.store.append_history(
                self.run_id,
                "subflow.started",
                node_id=self.node_id,
                data={"child": child_id, "blueprint": bp.id, "version": bp.version},
            )
        return child_id

    def child(self, run_id: str) -> ChildRun | None:
        """A child run as it is now."""
        return child_run(self.att.scope.rt, run_id)

    def scatter(self, items: list[Any]) -> int:
        """Keep a batch's items in pages."""
        return put_items(self.att.scope, self.node_id, self.iteration, items)

    def gather(self) -> Any:
        """Collect a batch's outputs in pages; the reference."""
        return gather_outputs(self.att.scope, self.node_id, self.iteration)

    def webhook_url(self) -> str:
        """``<FLOWBRIDGE_WEBHOOK_BASE_URL>/webhooks/<run id>/<node id>``, signed with a secret."""
        settings = self.att.scope.rt.settings
        return webhook_url(
            settings.webhook_base_url, self.run_id, self.node_id, settings.webhook_secret
        )
