"""The engine's one seam to the outside world: sending node tasks, revoking them, locks, hints.

The engine never imports Celery or Redis. Whatever runs it provides a
``TaskPort``: the Celery app and Redis in workers and the bridge
(``tasks.worker.dispatch.CeleryPort``), or a queue in this process for
``flowbridge.testing`` (``tasks.inprocess``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

__all__ = ["NodeTask", "RunLocks", "TaskPort", "task_id"]


def task_id(run_id: str, node_id: str, iteration: int, attempt: int) -> str:
    """Deterministic task id of one attempt of one node, so cancel can revoke it."""
    return f"{run_id}:{node_id}:{iteration}:{attempt}"


@dataclass(frozen=True, kw_only=True)
class NodeTask:
    """One attempt of one node to run: what a task message carries, and how to send it."""

    run_id: str
    node_id: str
    iteration: int = 0
    attempt: int = 1
    #: Seconds to wait before it may run (a retry's backoff, a short timer).
    countdown: float | None = None
    #: A short timer's wake-up call for a waiting node (its id differs from the node's task).
    wake: bool = False
    #: The node's timeout: the soft time limit the task runs under.
    timeout_s: float | None = None
    #: A chord header (a branch that advances node by node inside the chord).
    branch: bool = False
    #: A batch item: its index in the list of the scatter ``node_id``.
    item: int | None = None

    @property
    def task_id(self) -> str:
        """The id the task is sent with."""
        node = self.node_id if self.item is None else f"{self.node_id}[{self.item}]"
        base = task_id(self.run_id, node, self.iteration, self.attempt)
        return f"{base}:wake" if self.wake else base


class RunLocks(Protocol):
    """Per-run locks paired with the store's fence (see ``state.locks.RunLock``)."""

    def hold(self, run_id: str, *, wait_s: float = 0.0) -> AbstractContextManager[int | None]:
        """Hold the run's lock; yields the new fence, or None when another holder has it."""
        ...


class TaskPort(Protocol):
    """How the engine reaches the task queue, the workers and the outbox relay."""

    #: Exceptions that mean "the node ran past its timeout" (Celery's soft time limit).
    timeout_errors: tuple[type[BaseException], ...]

    def dispatch(self, task: NodeTask) -> None:
        """Send one node attempt to its run's queue."""
        ...

    def dispatch_chord(
        self, heads: Sequence[NodeTask], *, join_id: str, window: int | None = None
    ) -> None:
        """Run the branches starting at ``heads`` together; when all return, fire ``join_id``.

        ``window``: the heads are a window of a batch's items and ``join_id`` its gather.
        """
        ...

    def revoke(self, task_ids: Sequence[str]) -> None:
        """Ask workers not to start these tasks (best effort: the store's status decides)."""
        ...

    def notify_outbox(self) -> None:
        """Wake the outbox relay: rows were committed (a lost hint only delays them)."""
        ...

    def run_locks(self) -> RunLocks:
        """The per-run locks of this deployment."""
        ...

    def note_missing(
        self, run_id: str, node_id: str, iteration: int, worker: str
    ) -> tuple[list[str], float]:
        """Record that ``worker`` lacks the node; every worker that did, and for how long."""
        ...
