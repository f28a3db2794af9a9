"""The Celery app: JSON only, acks late, one queue per shard, routed by run id.

``celery -A tasks worker`` and ``celery -A tasks beat`` find ``app`` here. The
configuration is read from the environment when Celery first needs it, never
at import.
"""

from __future__ import annotations

import logging
import ssl
import zlib
from typing import Any

from celery import Celery, Task, signals
from kombu.entity import Exchange, Queue

from state.errors import FlowbridgeError
from tasks.constants import (
    BRANCH_TASK,
    JOIN_TASK,
    RECONCILE_TASK,
    RUN_NODE_TASK,
    SHARD_QUEUE_PREFIX,
)
from tasks.presence import Presence
from tasks.runtime import Runtime, get_runtime, load_user_code
from tasks.settings import Settings

__all__ = ["ShardRouter", "app", "celery_config", "shard_of", "shard_queue"]

log = logging.getLogger("flowbridge.worker")

_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}

#: Exit code of a worker or beat that cannot start (bad configuration, user code or blueprint).
EXIT_CONFIG = 2


def shard_of(run_id: str, shards: int) -> int:
    """The shard of a run: ``crc32(run_id) % shards``."""
    return zlib.crc32(run_id.encode()) % shards


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


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from flowbridge's."""
    transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.unacked_restore_s is not None:
        transport["unacked_restore_interval"] = settings.unacked_restore_s
        transport["unacked_restore_throttle"] = 1
    if settings.redis_prefix:
        transport["global_keyprefix"] = settings.redis_prefix
    tls: dict[str, Any] = {}
    if settings.redis_ssl_cert_reqs is not None:
        # A rediss:// URL without ssl_cert_reqs makes Celery's Redis result backend raise.
        use_ssl = {"ssl_cert_reqs": _CERT_REQS[settings.redis_ssl_cert_reqs]}
        tls = {"broker_use_ssl": use_ssl, "redis_backend_use_ssl": dict(use_ssl)}
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
        "beat_schedule": {
            "flowbridge.reconcile": {
                "task": RECONCILE_TASK,
                "schedule": settings.reconcile_interval_s,
                "options": {"expires": settings.reconcile_interval_s},
            }
        },
    }


app = Celery("flowbridge", set_as_current=False)
# A callable default is a promise: Celery calls it when the configuration is first needed
# (worker, beat or the first send), so the environment is read at start-up, not at import.
app.add_defaults(lambda: celery_config(Settings.from_env()))


def _start_or_exit(role: str) -> Runtime:
    """Load user code for a worker or beat; on a bad app or blueprint, exit with the reason."""
    try:
        runtime = get_runtime()
        load_user_code(runtime.settings)
    except FlowbridgeError as exc:
        log.critical("cannot start the %s: %s", role, exc)
        # Celery's signal dispatch logs and swallows an Exception from a receiver (the worker
        # would then report "ready." and fail every run); SystemExit is not swallowed.
        raise SystemExit(EXIT_CONFIG) from exc
    return runtime


@signals.worker_init.connect
def _load_user_code_in_worker(**_: Any) -> None:
    # In the parent, before the pool forks: children inherit the registries.
    runtime = _start_or_exit("worker")
    runtime.ensure_schema()
    runtime.store.close()


_presence: list[Presence] = []


@signals.worker_ready.connect
def _announce_worker(sender: Any = None, **_: Any) -> None:
    # After the pool started: the refresh thread must not exist when the pool forks.
    runtime = get_runtime()
    presence = Presence(
        runtime,
        role="worker",
        name=str(getattr(sender, "hostname", None) or "worker"),
        nodes=runtime.nodes.names(),
        blueprints=[f"{b.id}@{b.version}" for b in runtime.blueprints.all()],
    )
    presence.announce()
    presence.start_refresh()
    _presence.append(presence)


@signals.worker_shutdown.connect
def _withdraw_worker(**_: Any) -> None:
    while _presence:
        _presence.pop().withdraw()


@signals.beat_init.connect
def _load_user_code_in_beat(**_: Any) -> None:
    _start_or_exit("beat")


def _delivery(task: Task) -> dict[str, Any]:
    """What the engine needs to know of this delivery: redelivered, and by which worker."""
    return {
        "redelivered": bool((task.request.delivery_info or {}).get("redelivered")),
        "worker": task.request.hostname,
    }


@app.task(name=RUN_NODE_TASK, bind=True, ignore_result=True)
def run_node(
    self: Task, run_id: str, node_id: str, iteration: int = 0, attempt: int = 1, wake: bool = False
) -> str:
    """Run one attempt of one node (at least once; its state effects apply once)."""
    from tasks.engine import execute_node

    step = execute_node(
        get_runtime(), run_id, node_id, iteration, attempt, wake=wake, **_delivery(self)
    )
    return step.kind


@app.task(name=BRANCH_TASK, bind=True)
def run_branch(
    self: Task, run_id: str, node_id: str, iteration: int = 0, attempt: int = 1
) -> dict[str, str]:
    """A chord header: run a branch node by node; never raises, returns only ids and outcomes."""
    from tasks.engine import execute_node

    rt = get_runtime()
    step = execute_node(rt, run_id, node_id, iteration, attempt, chord=True, **_delivery(self))
    if step.next_node is not None or step.retry_attempt is not None:
        loaded = rt.load_run(run_id)
        if loaded is not None and loaded[1] is not None:
            bp = loaded[1]
            nxt = step.next_node or node_id
            sig = rt.signature(
                bp,
                run_id,
                nxt,
                task=BRANCH_TASK,
                iteration=iteration,
                attempt=step.retry_attempt or 1,
                countdown=step.countdown,
            )
            # The replacement keeps this task's place in the chord.
            return self.replace(sig)  # type: ignore[no-any-return]
    return {"node": node_id, "outcome": step.kind}


@app.task(name=JOIN_TASK, bind=True, ignore_result=True)
def fire_join(self: Task, results: Any, run_id: str, join_id: str, iteration: int = 0) -> str:
    """A chord body: fire the join once (the state store's conditional write decides)."""
    from tasks.engine import fire_from_chord

    return fire_from_chord(get_runtime(), run_id, join_id, iteration)


@app.task(name=RECONCILE_TASK, ignore_result=True)
def reconcile() -> dict[str, int]:
    """Re-dispatch stalled runs' pending nodes (the full reconciler is in tasks.reconciler)."""
    from tasks.reconciler import reconcile_once

    return reconcile_once(get_runtime())
