"""The engine's port on Celery and Redis: task messages, the chord fast path, revokes, hints."""

from __future__ import annotations

import logging
from collections.abc import Sequence
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
    WF_ACTIVATE_TASK,
    WF_ACTIVITY_TASK,
    WF_RESOLVE_ERROR_TASK,
    WF_RESOLVE_TASK,
)
from tasks.port import ActivationTask, ActivityTask, NodeTask
from tasks.settings import Settings
from tasks.tracing import current_headers
from tasks.worker.config import redis_ssl_options
from tasks.worker.presence import note_missing

if TYPE_CHECKING:
    from celery import Celery, Signature

__all__ = ["CeleryPort", "redis_client"]

log = logging.getLogger("flowbridge.runtime")


def redis_client(settings: Settings) -> redis.Redis[bytes]:
    """A Redis client for hints, locks and presence records (TLS options as Celery's)."""
    options = redis_ssl_options(settings)
    if options is None:
        return redis.Redis.from_url(settings.redis_url)
    return redis.Redis.from_url(settings.redis_url, ssl_cert_reqs=settings.redis_ssl_cert_reqs)


class CeleryPort:
    """``tasks.port.TaskPort`` on the Celery app and the deployment's Redis."""

    timeout_errors: tuple[type[BaseException], ...] = (SoftTimeLimitExceeded,)

    def __init__(self, settings: Settings, store: StateStore, *, app: Celery) -> None:
        """Send with ``app``; Redis is connected lazily."""
        self.settings = settings
        self.store = store
        self.app = app
        self._redis: redis.Redis[bytes] | None = None

    @property
    def redis(self) -> redis.Redis[bytes]:
        """A Redis client for hints, locks and presence records."""
        if self._redis is None:
            self._redis = redis_client(self.settings)
        return self._redis

    def signature(self, task: NodeTask) -> Signature:
        """The Celery signature of one node attempt, routed to its run's shard queue."""
        options: dict[str, Any] = {"task_id": task.task_id}
        if task.timeout_s:
            # The node's timeout is the soft limit (raised in the task); the hard one kills.
            options["soft_time_limit"] = task.timeout_s
            options["time_limit"] = task.timeout_s + HARD_LIMIT_GRACE_S
        if task.countdown:
            options["countdown"] = task.countdown
        trace = current_headers()
        if trace:
            # The dispatching span (the bridge's record, or the node attempt that routed).
            options["headers"] = dict(trace)
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

    def dispatch(self, task: NodeTask) -> None:
        """Send one node attempt to its run's shard queue."""
        self.signature(task).apply_async()

    def dispatch_chord(
        self, heads: Sequence[NodeTask], *, join_id: str, window: int | None = None
    ) -> None:
        """A Celery chord: the branches as header tasks, a body that fires ``join_id``."""
        from celery import chord

        first = heads[0]
        kwargs: dict[str, Any] = {
            "run_id": first.run_id,
            "join_id": join_id,
            "iteration": first.iteration,
        }
        if window is not None:
            kwargs["window"] = window
        body = self.app.signature(JOIN_TASK, kwargs=kwargs)
        chord([self.signature(h) for h in heads], body).apply_async()

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
