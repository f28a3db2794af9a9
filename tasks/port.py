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
from typing import Any, Protocol

__all__ = [
    "LOST",
    "ORPHANED",
    "ActivationTask",
    "ActivityTask",
    "LostTask",
    "NodeTask",
    "RunLocks",
    "TaskPort",
    "task_id",
]


def task_id(run_id: str, node_id: str, iteration: int, attempt: int, run_attempt: int = 1) -> str:
    """Deterministic task id of one attempt of one node, so cancel can revoke it.

    A retried run's tasks carry its attempt (``:r2``): workers remember revoked ids,
    and a revoke of the first attempt's task must not discard the retry's.
    """
    base = f"{run_id}:{node_id}:{iteration}:{attempt}"
    return base if run_attempt == 1 else f"{base}:r{run_attempt}"


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
    #: The run's attempt (``Run.attempt``: one more per retry).
    run_attempt: int = 1
    #: A batch item: its index in the list of the scatter ``node_id``.
    item: int | None = None

    @property
    def task_id(self) -> str:
        """The id the task is sent with."""
        node = self.node_id if self.item is None else f"{self.node_id}[{self.item}]"
        base = task_id(self.run_id, node, self.iteration, self.attempt, self.run_attempt)
        return f"{base}:wake" if self.wake else base


@dataclass(frozen=True, kw_only=True)
class ActivationTask:
    """Wake a code workflow run: apply what is in its inbox (``item`` is put there first)."""

    run_id: str
    #: An inbox item to add before activating (a short timer's wake-up carries its firing).
    item: dict[str, Any] | None = None
    countdown: float | None = None
    #: The soft time limit of the activation (workflow code's CPU budget).
    time_limit_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class ActivityTask:
    """One attempt of one activity of a code workflow run."""

    run_id: str
    gen: int
    seq: int
    name: str
    attempt: int = 1
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    #: The Celery queue (default: the run's shard queue).
    queue: str | None = None
    timeout_s: float | None = None
    countdown: float | None = None
    #: Run by flowbridge's activity task (an ``@activity``), or sent to a Celery task by name.
    registered: bool = True

    @property
    def task_id(self) -> str:
        """``run:gen:seq:attempt``: a cancel revokes it by this id."""
        return f"{self.run_id}:{self.gen}:{self.seq}:{self.attempt}"


#: ``LostTask.why``: it left its queue and no live worker has it.
LOST = "lost"
#: ``LostTask.why``: a dead worker left it unacknowledged.
ORPHANED = "orphaned"


@dataclass(frozen=True, kw_only=True)
class LostTask:
    """A node task the broker lost: sent and never received, or held by a worker that died.

    ``why`` is ``lost`` (it left its queue and no worker recorded it: kombu's BRPOP
    popped it and the worker died before recording it as unacknowledged) or
    ``orphaned`` (unacknowledged by a worker that is dead, so Redis would return it
    only after the visibility timeout).
    """

    run_id: str
    node_id: str
    iteration: int
    why: str
    #: When it was sent (the sender's wall time).
    sent_at: float
    #: The queue it was sent to.
    queue: str
    #: The port's handle on it (a sent-record member, a delivery tag).
    ref: str


class RunLocks(Protocol):
    """Per-run locks paired with the store's fence (see ``state.locks.RunLock``)."""

    def hold(
        self, run_id: str, *, wait_s: float = 0.0, fenced: bool = True
    ) -> AbstractContextManager[int | None]:
        """Hold the run's lock; yields the new fence, or None when another holder has it.

        ``fenced=False``: the holder makes no fenced write (a code workflow's activation,
        whose commit is conditional on its history), so no fence is advanced; yields 0.
        """
        ...

    def expires_in(self, run_id: str) -> float:
        """Seconds until a held lock expires by itself (a dead holder's); 0.0 if free."""
        ...


class TaskPort(Protocol):
    """How the engine reaches the task queue, the workers and the outbox relay."""

    #: Exceptions that mean "the node ran past its timeout" (Celery's soft time limit).
    timeout_errors: tuple[type[BaseException], ...]

    def dispatch(self, task: NodeTask) -> None:
        """Send one node attempt to its run's queue."""
        ...

    def publish_batch(self) -> AbstractContextManager[None]:
        """Hold the messages sent inside and send them together when the block ends.

        A failed send raises from the ``with``; an exception inside drops what
        was not sent yet. Nested blocks join the outer one.
        """
        ...

    def dispatch_chord(
        self, heads: Sequence[NodeTask], *, join_id: str, window: int | None = None
    ) -> None:
        """Run the branches starting at ``heads`` together; when all return, fire ``join_id``.

        ``window``: the heads are a window of a batch's items and ``join_id`` its gather.
        """
        ...

    def revoke(self, task_ids: Sequence[str], *, terminate: bool = False) -> None:
        """Ask workers not to start these tasks (``terminate``: kill them if running)."""
        ...

    def dispatch_activation(self, task: ActivationTask) -> None:
        """Send a code workflow run's activation to its run's queue."""
        ...

    def knows_task(self, name: str) -> bool:
        """Whether a task of that name is registered in this process (a plain Celery task)."""
        ...

    def dispatch_activity(self, task: ActivityTask) -> None:
        """Send one activity attempt (its outcome comes back as an inbox item)."""
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

    def find_lost(self, *, deadline_s: float, limit: int) -> list[LostTask]:
        """Node tasks lost or orphaned (``LostTask``) at least ``deadline_s`` after their send."""
        ...

    def queues_emptied_ago(self) -> float | None:
        """How long ago the task queues started empty (Redis restarted without its data), once.

        The first call after such a start returns the seconds since (every task sent
        before is gone, with the records ``find_lost`` reads); every later call ``None``.
        """
        ...

    def still_lost(self, task: LostTask) -> bool:
        """Whether ``task`` is still as ``find_lost`` found it (nobody recovered it since)."""
        ...

    def requeue(self, task: LostTask, *, takeover: bool = False) -> bool:
        """Put an orphaned task back at the head of its queue; False if it was not there.

        With ``takeover`` it comes back as a redelivery, which takes a ``running`` node over.
        """
        ...

    def forget(self, task: LostTask) -> None:
        """Drop what the port keeps of a lost task whose node no longer waits for it."""
        ...
