"""flowbridge on Celery: the app and its tasks, its configuration, and the engine's port.

``app`` (``tasks.worker.app``), ``celery_config``/``ShardRouter``
(``tasks.worker.config``), ``CeleryPort`` (``tasks.worker.port``: the engine's
``TaskPort`` on Celery and Redis, with the chord fast path), the process's
runtime (``get_runtime``, in ``tasks.worker.app``), start-up and presence
(``tasks.worker.startup``, ``tasks.worker.presence``).
"""

from tasks.worker import startup  # noqa: F401 - connects the start-up signal receivers
from tasks.worker.app import app, get_runtime, reset_runtime, runtime_from_settings
from tasks.worker.config import ShardRouter, celery_config, shard_of, shard_queue
from tasks.worker.port import CeleryPort, redis_client

__all__ = [
    "CeleryPort",
    "ShardRouter",
    "app",
    "celery_config",
    "get_runtime",
    "redis_client",
    "reset_runtime",
    "runtime_from_settings",
    "shard_of",
    "shard_queue",
]
