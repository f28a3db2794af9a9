"""The Celery configuration flowbridge derives from its settings, and routing by run id."""

from __future__ import annotations

import ssl
from typing import Any

from kombu.entity import Exchange, Queue

from state.keys import shard_of
from tasks.constants import CHECK_DISPATCH_TASK, RECONCILE_TASK, SHARD_QUEUE_PREFIX
from tasks.settings import Settings

__all__ = ["ShardRouter", "celery_config", "shard_of", "shard_queue"]

_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def shard_queue(run_id: str, shards: int) -> str:
    """The queue of a run's tasks: ``flowbridge.shard.<n>``."""
    return f"{SHARD_QUEUE_PREFIX}{shard_of(run_id, shards)}"


class ShardRouter:
    """A ``task_routes`` entry: tasks with a ``run_id`` go to that run's shard queue."""

    def __init__(self, shards: int) -> None:
        """Route over ``shards`` queues."""
        self.shards = shards

    def __call__(
        self, name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
    ) -> dict[str, str] | None:
        """Pick the queue from the ``run_id`` argument, so retries and replaced tasks inherit it."""
        run_id = (kwargs or {}).get("run_id")
        if run_id is None and args:
            run_id = args[0]
        if isinstance(run_id, str):
            return {"queue": shard_queue(run_id, self.shards)}
        return None


def redis_ssl_options(settings: Settings) -> dict[str, Any] | None:
    """``ssl_cert_reqs`` for a ``rediss://`` URL (Celery's Redis result backend requires it)."""
    if settings.redis_ssl_cert_reqs is None:
        return None
    return {"ssl_cert_reqs": _CERT_REQS[settings.redis_ssl_cert_reqs]}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from flowbridge's."""
    transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.unacked_restore_s is not None:
        transport["unacked_restore_interval"] = settings.unacked_restore_s
        transport["unacked_restore_throttle"] = 1
    if settings.redis_prefix:
        transport["global_keyprefix"] = settings.redis_prefix
    tls: dict[str, Any] = {}
    use_ssl = redis_ssl_options(settings)
    if use_ssl is not None:
        # A rediss:// URL without ssl_cert_reqs makes Celery's Redis result backend raise.
        tls = {"broker_use_ssl": use_ssl, "redis_backend_use_ssl": dict(use_ssl)}
    schedule: dict[str, Any] = {
        "flowbridge.reconcile": {
            "task": RECONCILE_TASK,
            "schedule": settings.reconcile_interval_s,
            "options": {"expires": settings.reconcile_interval_s},
        }
    }
    if settings.dispatch_deadline_s:
        # Its own, shorter schedule: a lost node task is found in seconds, not at the stall.
        schedule["flowbridge.check_dispatch"] = {
            "task": CHECK_DISPATCH_TASK,
            "schedule": settings.dispatch_deadline_s,
            "options": {"expires": settings.dispatch_deadline_s},
        }
    return {
        **tls,
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": dict(transport),
        "broker_connection_retry_on_startup": True,
        # JSON only: pickle would let a message run arbitrary code.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # A killed worker's task is redelivered; the state store makes the rerun harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Each shard queue has its own direct exchange and key: a shared default exchange
        # would bind every queue to the same key and copy each message to all of them.
        "task_queues": [
            Queue(q, Exchange(q, type="direct"), routing_key=q)
            for q in (f"{SHARD_QUEUE_PREFIX}{n}" for n in range(settings.shards))
        ],
        "task_default_queue": f"{SHARD_QUEUE_PREFIX}0",
        "task_routes": (ShardRouter(settings.shards),),
        "worker_prefetch_multiplier": settings.prefetch,
        "worker_soft_shutdown_timeout": settings.soft_shutdown_s,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_hijack_root_logger": False,
        "beat_schedule": schedule,
    }
