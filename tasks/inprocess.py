"""Running blueprints in this process: the engine on a local port, a virtual clock, no services.

``InProcessPort`` is the engine's ``TaskPort`` without Celery or Redis: tasks
wait in a queue (ordered by their due time on a ``VirtualClock``), a chord is
its header tasks plus a body that runs once they all returned, revokes are
remembered, outbox rows are collected as the records Kafka would get, and run
locks are process-local. ``Runner`` drains that queue with the real engine, so
retries, joins, timers, events and cancellation behave as in production; only
the transport differs. ``flowbridge.testing`` is the public face of it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from state.protocol import StateStore
from state.records import OutboxMessage
from tasks.engine import execute_node, fire_from_chord
from tasks.port import ActivationTask, ActivityTask, LostTask, NodeTask

__all__ = ["InProcessPort", "LocalRunLocks", "Published", "QueuedTask", "VirtualClock"]

log = logging.getLogger("flowbridge.inprocess")


class VirtualClock:
    """A clock that only moves when told to (or when the runner skips to the next due task)."""

    def __init__(self, start: float | None = None) -> None:
        """Start at ``start`` (default: the wall time now)."""
        self._now = time.time() if start is None else start

    def __call__(self) -> float:
        """The current virtual time, in epoch seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (never backward)."""
        if seconds < 0:
            raise ValueError(f"the clock never moves backward (got {seconds} s)")
        self._now += seconds

    def set(self, when: float) -> None:
        """Move the clock forward to ``when`` (a time in the past is left alone)."""
        self._now = max(self._now, when)


@dataclass(frozen=True)
class Published:
    """A record the outbox relay would have published to Kafka."""

    id: str
    topic: str
    key: str | None
    value: Any


@dataclass(order=True)
class QueuedTask:
    """A task waiting for its due time: a node attempt, or a chord body."""

    due: float
    seq: int
    task: NodeTask | None = field(compare=False, default=None)
    #: The chord a header task belongs to (its body runs when all members returned).
    chord: int | None = field(compare=False, default=None)
    #: For a chord body: the join to fire, and the batch window it ends (or None).
    body: tuple[str, str, int, int | None] | None = field(compare=False, default=None)
    #: A code workflow's activation, or one of its activity attempts.
    activation: ActivationTask | None = field(compare=False, default=None)
    activity: ActivityTask | None = field(compare=False, default=None)


class LocalRunLocks:
    """Per-run locks of one process, paired with the store's fence like the Redis ones."""

    def __init__(self, store: StateStore) -> None:
        """Advance fences in ``store``."""
        self.store = store
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def expires_in(self, run_id: str) -> float:
        """Local locks never expire: a holder in this process releases it."""
        return 0.0

    @contextmanager
    def hold(
        self, run_id: str, *, wait_s: float = 0.0, fenced: bool = True
    ) -> Iterator[int | None]:
        """Hold the run's lock and yield a fresh fence (0: ``fenced=False``), or None if held."""
        with self._lock:
            if run_id in self._held:
                taken = False
            else:
                self._held.add(run_id)
                taken = True
        if not taken:
            yield None
            return
        try:
            yield self.store.advance_fence(run_id) if fenced else 0
        finally:
            with self._lock:
                self._held.discard(run_id)


class InProcessPort:
    """``TaskPort`` for one process: a due-time queue, chords, revokes and a collected outbox."""

    timeout_errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        store: StateStore,
        clock: VirtualClock,
        *,
        on_record: Callable[[Published], None] | None = None,
    ) -> None:
        """Queue tasks on ``clock``'s time; relay ``store``'s outbox into ``published``.

        ``on_record`` sees each relayed record (the runner feeds re-emitted node
        jobs back into the queue, as the bridge would).
        """
        self.store = store
        self.clock = clock
        self.on_record = on_record
        self.queue: list[QueuedTask] = []
        self.revoked: set[str] = set()
        self.published: list[Published] = []
        #: Chord id to the number of header members still running.
        self.chords: dict[int, int] = {}
        self.chord_bodies: dict[int, tuple[str, str, int, int | None]] = {}
        self._seq = itertools.count()
        self._locks = LocalRunLocks(store)

    # --- TaskPort --------------------------------------------------------------------------
    def dispatch(self, task: NodeTask) -> None:
        """Queue one node attempt at its due time."""
        self._push(task, chord=None)

    def publish_batch(self) -> AbstractContextManager[None]:
        """Nothing to batch: tasks are queued in this process."""
        return nullcontext()

    def dispatch_chord(
        self, heads: Sequence[NodeTask], *, join_id: str, window: int | None = None
    ) -> None:
        """Queue the header tasks; the body fires ``join_id`` once every member returned."""
        chord = next(self._seq)
        self.chords[chord] = len(heads)
        first = heads[0]
        self.chord_bodies[chord] = (first.run_id, join_id, first.iteration, window)
        for head in heads:
            self._push(head, chord=chord)

    def revoke(self, task_ids: Sequence[str], *, terminate: bool = False) -> None:
        """Remember the revoked ids: a queued task with one of them is dropped."""
        self.revoked.update(task_ids)

    def dispatch_activation(self, task: ActivationTask) -> None:
        """Queue a code workflow run's activation."""
        due = self.clock() + (task.countdown or 0.0)
        heapq.heappush(self.queue, QueuedTask(due, next(self._seq), activation=task))

    def knows_task(self, name: str) -> bool:
        """Only ``@activity`` functions run in process: no Celery task is known."""
        return False

    def dispatch_activity(self, task: ActivityTask) -> None:
        """Queue one activity attempt."""
        due = self.clock() + (task.countdown or 0.0)
        heapq.heappush(self.queue, QueuedTask(due, next(self._seq), activity=task))

    def notify_outbox(self) -> None:
        """Relay the outbox now: collect every pending row and delete it."""
        while rows := self.store.pending_outbox(limit=500):
            self.store.delete_outbox([r.id for r in rows])
            for row in rows:
                record = self._published(row)
                self.published.append(record)
                if self.on_record is not None:
                    self.on_record(record)

    def run_locks(self) -> LocalRunLocks:
        """Process-local run locks."""
        return self._locks

    def note_missing(
        self, run_id: str, node_id: str, iteration: int, worker: str
    ) -> tuple[list[str], float]:
        """No other worker can have it here: the node fails at once."""
        return [worker], float("inf")

    def find_lost(self, *, deadline_s: float, limit: int) -> list[LostTask]:
        """Nothing is lost between a queue and a worker in one process."""
        return []

    def queues_emptied_ago(self) -> float | None:
        """The queue lives and dies with this process."""
        return None

    def still_lost(self, task: LostTask) -> bool:
        """Never lost here."""
        return False

    def requeue(self, task: LostTask, *, takeover: bool = False) -> bool:
        """Never orphaned here."""
        return False

    def forget(self, task: LostTask) -> None:
        """Nothing is kept."""

    # --- the queue -------------------------------------------------------------------------
    def _push(self, task: NodeTask, *, chord: int | None) -> None:
        due = self.clock() + (task.countdown or 0.0)
        heapq.heappush(self.queue, QueuedTask(due, next(self._seq), task=task, chord=chord))

    def push_body(self, chord: int) -> None:
        """Queue a chord's body (its members all returned)."""
        body = self.chord_bodies.pop(chord)
        heapq.heappush(self.queue, QueuedTask(self.clock(), next(self._seq), body=body))

    def pop_due(self, *, advance: bool) -> QueuedTask | None:
        """The next task due now; with ``advance``, skip the clock to the next one if needed."""
        if not self.queue:
            return None
        if self.queue[0].due > self.clock():
            if not advance:
                return None
            self.clock.set(self.queue[0].due)
        return heapq.heappop(self.queue)

    @staticmethod
    def _published(row: OutboxMessage) -> Published:
        return Published(id=row.id, topic=row.topic, key=row.key, value=row.plain_value())


def run_queued(port: InProcessPort, item: QueuedTask, rt: Any) -> None:
    """Run one queued task with the engine, as a worker would."""
    if item.activation is not None:
        from tasks.workflow.activation import activate

        if item.activation.item is not None:
            key = str(item.activation.item["key"])
            rt.store.workflows.put_inbox(item.activation.run_id, key, item.activation.item)
        activate(rt, item.activation.run_id)
        return
    if item.activity is not None:
        from tasks.workflow.activities import run_activity

        if item.activity.task_id not in port.revoked:
            run_activity(rt, item.activity)
        return
    if item.body is not None:
        run_id, join_id, iteration, window = item.body
        fire_from_chord(rt, run_id, join_id, iteration, window=window)
        return
    task = item.task
    assert task is not None
    if task.task_id in port.revoked:
        log.debug("revoked task %s dropped", task.task_id)
        _member_done(port, item)
        return
    step = execute_node(
        rt,
        task.run_id,
        task.node_id,
        task.iteration,
        task.attempt,
        chord=task.branch,
        wake=task.wake,
        worker="in-process",
        item=task.item,
    )
    if task.branch and (step.next_node is not None or step.retry_attempt is not None):
        loaded = rt.load_run(task.run_id)
        if loaded is not None and loaded[1] is not None:
            nxt = rt.node_task(
                loaded[1],
                task.run_id,
                step.next_node or task.node_id,
                iteration=task.iteration,
                attempt=step.retry_attempt or 1,
                countdown=step.countdown,
                branch=True,
                run_attempt=loaded[0].attempt,
                item=task.item,
            )
            # The replacement keeps its place in the chord, as Celery's Task.replace does.
            port._push(nxt, chord=item.chord)
            return
    _member_done(port, item)


def _member_done(port: InProcessPort, item: QueuedTask) -> None:
    if item.chord is None or item.chord not in port.chords:
        return
    port.chords[item.chord] -= 1
    if port.chords[item.chord] == 0:
        del port.chords[item.chord]
        port.push_body(item.chord)
