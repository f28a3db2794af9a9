"""What the engine carries while it handles one task: the run in hand, and one node attempt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from state.protocol import StateStore
from state.records import OutboxMessage, Run
from tasks.blueprint import Blueprint, NodeSpec
from tasks.events import lifecycle_events
from tasks.runtime import InlineBudget, Runtime

__all__ = ["Attempt", "InlineBudget", "RunScope", "Step"]


@dataclass
class Step:
    """What one node task did, and for a chord branch, what the branch does next."""

    kind: str
    #: The next node of a chord branch (the task replaces itself with it).
    next_node: str | None = None
    #: A chord branch's retry: the attempt to run next and after how long.
    retry_attempt: int | None = None
    countdown: float | None = None
    #: The successor (node id, iteration) this task runs next itself, without a broker hop
    #: (``InlineBudget``); for a duplicate, the next committed node of the chain to repair.
    then: tuple[str, int] | None = None


@dataclass(frozen=True)
class RunScope:
    """One run as read for this task: the runtime, the run record and its blueprint snapshot."""

    rt: Runtime
    run: Run
    bp: Blueprint

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.run.run_id

    @property
    def store(self) -> StateStore:
        """The state store."""
        return self.rt.store

    def dispatch(
        self,
        node_id: str,
        *,
        iteration: int = 0,
        attempt: int = 1,
        countdown: float | None = None,
        wake: bool = False,
    ) -> None:
        """Send one attempt of one of this run's nodes."""
        self.rt.dispatch(
            self.bp,
            self.run_id,
            node_id,
            iteration=iteration,
            attempt=attempt,
            countdown=countdown,
            wake=wake,
            run_attempt=self.run.attempt,
        )

    def lifecycle(self, kind: str, **fields: Any) -> list[OutboxMessage]:
        """The ``run.<kind>`` record for the runs topic, unless its blueprint or settings say no."""
        return lifecycle_events(
            self.rt.settings, self.run_id, kind, enabled=self.bp.run_events, **fields
        )

    def finish_outbox(self, kind: str, **fields: Any) -> list[OutboxMessage]:
        """What the change that ends the run writes besides its status.

        ``run.<kind>``, its parent's wake-up, and a cancel for each child still running.
        """
        from tasks.engine.children import child_cancels, parent_notice

        return [
            *self.lifecycle(kind, **fields),
            *parent_notice(self.rt, self.run, kind),
            *child_cancels(self.rt, self.run, self.bp, kind),
        ]


@dataclass(frozen=True)
class Attempt:
    """One attempt of one node of the run in scope."""

    scope: RunScope
    spec: NodeSpec
    iteration: int
    #: 1-based attempt number, as the store recorded it when claiming the node.
    number: int
    #: A chord header: successors and retries are the chord's to run, not this task's.
    chord: bool = False
    #: What of a chain this task may still run itself (None: each successor is a task).
    inline: InlineBudget | None = None

    @property
    def node_id(self) -> str:
        """The node's id."""
        return self.spec.id
