"""The engine's port on Celery and Redis: task messages, the chord fast path, revokes, hints."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import redis
from celery.exceptions import SoftTimeLimitExceeded

from state.locks import RunLock
from state.protocol import StateStore
from tasks.constants import (
    BRANCH_TASK,
    HARD_LIMIT_GRACE_S,
    JOIN_TASK,
    OUTBOX_HINT_KEY,
    RUN_NODE_TASK,
    SENT_AT_HEADER,
    SHARD_QUEUE_PREFIX,
    WF_ACTIVATE_TASK,
    WF_ACTIVITY_TASK,
    WF_RESOLVE_ERROR_TASK,
    WF_RESOLVE_TASK,
)
from tasks.port import ActivationTask, ActivityTask, LostTask, NodeTask
from tasks.settings import Settings
from tasks.tracing import current_headers
from tasks.worker.config import redis_ssl_options, shard_queue
from tasks.worker.liveness import node_member
from tasks.worker.presence import note_missing
from tasks.worker.whereabouts import Whereabouts

if TYPE_CHECKING:
    from celery import Celery, Signature
    from kombu.messaging import Producer

__all__ = ["CeleryPort", "publish_only", "redis_client"]

log = logging.getLogger("flowbridge.runtime")

#: Task messages buffered per Redis pipeline (kombu flushes a full one on its own).
PUBLISH_BATCH_MAX = 500

#: Set in Redis by the first reconciler pass; missing again once Redis restarted empty.
QUEUES_MARK_KEY = "flowbridge:queues-mark"


def redis_client(settings: Settings) -> redis.Redis[bytes]:
    """A Redis client for hints, locks and presence records (TLS options as Celery's)."""
    options = redis_ssl_options(settings)
    if options is None:
        return redis.Redis.from_url(settings.redis_url)
    return redis.Redis.from_url(settings.redis_url, ssl_cert_reqs=settings.redis_ssl_cert_reqs)


def publish_only() -> None:
    """Declare this process one that sends tasks and never waits on their results (the bridge).

    Outside a worker, Celery's Redis result backend SUBSCRIBEs to each sent task's
    result channel (and UNSUBSCRIBEs when the result object is collected): two
    round trips per task message, more than the batched LPUSH itself. A worker
    process sets this same flag; ``AsyncResult.get`` then refuses to block here.
    """
    from celery._state import _set_task_join_will_block

    _set_task_join_will_block(True)


class CeleryPort:
    """``tasks.port.TaskPort`` on the Celery app and the deployment's Redis."""

    timeout_errors: tuple[type[BaseException], ...] = (SoftTimeLimitExceeded,)

    def __init__(self, settings: Settings, store: StateStore, *, app: Celery) -> None:
        """Send with ``app``; Redis is connected lazily."""
        self.settings = settings
        self.store = store
        self.app = app
        self._redis: redis.Redis[bytes] | None = None
        self._whereabouts: Whereabouts | None = None
        # The batching producer of this thread's open ``publish_batch`` (the bridge's relay
        # thread publishes through the same port, on its own).
        self._batch = threading.local()

    @property
    def redis(self) -> redis.Redis[bytes]:
        """A Redis client for hints, locks and presence records."""
        if self._redis is None:
            self._redis = redis_client(self.settings)
        return self._redis

    @property
    def whereabouts(self) -> Whereabouts:
        """Where node tasks are: sent records, queues, unacked messages, live workers."""
        if self._whereabouts is None:
            queues = [f"{SHARD_QUEUE_PREFIX}{n}" for n in range(self.settings.shards)]
            self._whereabouts = Whereabouts(
                self.redis, prefix=self.settings.redis_prefix, queues=queues
            )
        return self._whereabouts

    def signature(self, task: NodeTask, *, sent_at: float | None = None) -> Signature:
        """The Celery signature of one node attempt, routed to its run's shard queue."""
        options: dict[str, Any] = {"task_id": task.task_id}
        if sent_at is not None:
            # The same time as its sent record: the dispatch check compares the two.
            options["headers"] = {SENT_AT_HEADER: sent_at}
        if task.timeout_s:
            # The node's timeout is the soft limit (raised in the task); the hard one kills.
            options["soft_time_limit"] = task.timeout_s
            options["time_limit"] = task.timeout_s + HARD_LIMIT_GRACE_S
        if task.countdown:
            options["countdown"] = task.countdown
        trace = current_headers()
        if trace:
            # The dispatching span (the bridge's record, or the node attempt that routed).
            options["headers"] = {**options.get("headers", {}), **dict(trace)}
        kwargs: dict[str, Any] = {
            "run_id": task.run_id,
            "node_id": task.node_id,
            "iteration": task.iteration,
            "attempt": task.attempt,
        }
        if task.wake:
            kwargs["wake"] = True
        if task.item is not None:
            kwargs["item"] = task.item
        name = BRANCH_TASK if task.branch else RUN_NODE_TASK
        return self.app.signature(name, kwargs=kwargs, **options)

    def _record_sent(self, tasks: Sequence[NodeTask]) -> float:
        """Record node tasks as sent now, before publishing: one lost on the way is found."""
        sent_at = time.time()
        entries = [
            (
                shard_queue(t.run_id, self.settings.shards),
                node_member(t.run_id, t.node_id, t.iteration),
                sent_at,
            )
            for t in tasks
            # A batch item shares its scatter node's record: the batch's own recovery (the
            # reconciler sends a lost window again) covers items, not this check.
            if not t.wake and t.item is None
        ]
        if entries:
            try:
                self.whereabouts.record_sent(entries)
            except redis.RedisError as exc:
                # The publish fails too, or it goes through: then only the quick check misses it.
                log.warning("sent record not written (a lost task waits for the stall): %s", exc)
        return sent_at

    @contextlib.contextmanager
    def publish_batch(self) -> Iterator[None]:
        """Publish the task messages sent inside through one producer, in Redis pipelines.

        Each message is one LPUSH; here they go out together when the block ends
        (or every ``PUBLISH_BATCH_MAX``), so an exception inside discards what was
        not flushed yet, and a failed flush raises (a kombu or Redis error) from
        the ``with``. Nested blocks join the outer one.
        """
        if getattr(self._batch, "producer", None) is not None:
            yield
            return
        with self.app.producer_or_acquire() as producer, producer.batch(PUBLISH_BATCH_MAX):
            self._batch.producer = producer
            try:
                yield
            finally:
                self._batch.producer = None

    @property
    def _producer(self) -> Producer | None:
        """This thread's batching producer (None: Celery acquires one per message)."""
        producer: Producer | None = getattr(self._batch, "producer", None)
        return producer

    def dispatch(self, task: NodeTask) -> None:
        """Send one node attempt to its run's shard queue."""
        self.signature(task, sent_at=self._record_sent([task])).apply_async(producer=self._producer)

    def replacement(self, task: NodeTask) -> Signature:
        """The signature a chord branch replaces itself with (recorded as sent)."""
        return self.signature(task, sent_at=self._record_sent([task]))

    def dispatch_chord(
        self, heads: Sequence[NodeTask], *, join_id: str, window: int | None = None
    ) -> None:
        """A Celery chord: the branches as header tasks, a body that fires ``join_id``."""
        from celery.utils import uuid

        first = heads[0]
        kwargs: dict[str, Any] = {
            "run_id": first.run_id,
            "join_id": join_id,
            "iteration": first.iteration,
        }
        if window is not None:
            kwargs["window"] = window
        body = self.app.signature(JOIN_TASK, kwargs=kwargs)
        sent_at = self._record_sent(heads)
        # What ``chord.apply_async`` does, through one producer in Redis pipelines. A chord
        # sent from inside a worker task sent each header task with its own LPUSH round trip,
        # and its group result subscribed to every member's result channel (messages that
        # pile up unread). Each header task carries the body; the size is known up front.
        group_id = uuid()
        body.freeze(group_id=group_id)
        self.app.backend.set_chord_size(group_id, len(heads))
        with self.publish_batch():
            for index, head in enumerate(heads):
                sig = self.signature(head, sent_at=sent_at)
                sig.freeze(group_id=group_id, chord=body, group_index=index)
                sig.apply_async(producer=self._producer, add_to_parent=False)

    def revoke(self, task_ids: Sequence[str], *, terminate: bool = False) -> None:
        """Broadcast a revoke (held in workers' memory only)."""
        self.app.control.revoke(list(task_ids), terminate=terminate)

    def dispatch_activation(self, task: ActivationTask) -> None:
        """Send ``flowbridge.wf.activate`` to the run's shard queue."""
        options: dict[str, Any] = {}
        if task.countdown:
            options["countdown"] = task.countdown
        if task.time_limit_s:
            options["soft_time_limit"] = task.time_limit_s
            options["time_limit"] = task.time_limit_s + HARD_LIMIT_GRACE_S
        kwargs: dict[str, Any] = {"run_id": task.run_id}
        if task.item is not None:
            kwargs["item"] = task.item
        self.app.send_task(WF_ACTIVATE_TASK, kwargs=kwargs, **options)

    def knows_task(self, name: str) -> bool:
        """Whether this worker's Celery app has a task of that name."""
        return name in self.app.tasks

    def dispatch_activity(self, task: ActivityTask) -> None:
        """Send one activity attempt: flowbridge's activity task, or a Celery task by name."""
        options: dict[str, Any] = {"task_id": task.task_id}
        if task.countdown:
            options["countdown"] = task.countdown
        if task.timeout_s:
            options["soft_time_limit"] = task.timeout_s
            options["time_limit"] = task.timeout_s + HARD_LIMIT_GRACE_S
        if task.queue:
            options["queue"] = task.queue
        if task.registered:
            kwargs = {
                "run_id": task.run_id,
                "gen": task.gen,
                "seq": task.seq,
                "name": task.name,
                "attempt": task.attempt,
                "args": list(task.args),
                "kwargs": dict(task.kwargs or {}),
                "timeout_s": task.timeout_s,
            }
            self.app.send_task(WF_ACTIVITY_TASK, kwargs=kwargs, **options)
            return
        # A plain Celery task: its result (or failure) comes back through link callbacks,
        # routed to the run's shard queue by their run_id argument.
        ref = {"run_id": task.run_id, "gen": task.gen, "seq": task.seq, "name": task.name}
        link = self.app.signature(WF_RESOLVE_TASK, kwargs=ref)
        link_error = self.app.signature(WF_RESOLVE_ERROR_TASK, kwargs=ref)
        self.app.send_task(
            task.name,
            args=list(task.args),
            kwargs=dict(task.kwargs or {}),
            link=link,
            link_error=link_error,
            **options,
        )

    def notify_outbox(self) -> None:
        """Wake the bridge's outbox relay (a lost hint only delays: the relay also sweeps)."""
        key = self.settings.redis_prefix + OUTBOX_HINT_KEY
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, 0)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("outbox hint not sent (the relay's sweep will find the rows): %s", exc)

    def wait_for_outbox_hint(self, timeout_s: float) -> bool:
        """Block until a worker's hint arrives (True) or ``timeout_s`` passes (the relay's side)."""
        key = self.settings.redis_prefix + OUTBOX_HINT_KEY
        return self.redis.blpop([key], timeout=timeout_s) is not None

    def run_locks(self) -> RunLock:
        """The per-run Redis lock paired with the store's fence."""
        return RunLock(self.redis, self.store, prefix=self.settings.redis_prefix)

    def note_missing(
        self, run_id: str, node_id: str, iteration: int, worker: str
    ) -> tuple[list[str], float]:
        """Record the worker that lacked the node in Redis (shared by every worker)."""
        return note_missing(self.redis, self.settings, run_id, node_id, iteration, worker)

    def find_lost(self, *, deadline_s: float, limit: int) -> list[LostTask]:
        """Node tasks lost between a queue and a worker, or orphaned by a dead worker."""
        return self.whereabouts.find(deadline_s=deadline_s, limit=limit)

    def queues_emptied_ago(self) -> float | None:
        """Redis's uptime if its mark was missing (it restarted empty); sets the mark.

        Only one caller finds the mark missing (``SET NX``). A first deployment finds it
        missing too: the runs older than its Redis (none, usually) are re-emitted once.
        """
        if not self.redis.set(self.settings.redis_prefix + QUEUES_MARK_KEY, time.time(), nx=True):
            return None
        # Whole seconds, rounded down: the latest the start can be (a node updated just
        # after it is re-emitted needlessly, never one updated just before left out).
        return float(self.redis.info("server")["uptime_in_seconds"])

    def still_lost(self, task: LostTask) -> bool:
        """Whether nobody recovered ``task`` since it was found."""
        return self.whereabouts.still_lost(task)

    def requeue(self, task: LostTask, *, takeover: bool = False) -> bool:
        """Move an orphaned task back to the head of its queue (once)."""
        return self.whereabouts.requeue(task, takeover=takeover)

    def forget(self, task: LostTask) -> None:
        """Drop a lost task's sent record (its node no longer waits for it)."""
        self.whereabouts.forget(task)
