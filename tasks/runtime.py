"""Per-process runtime: settings, the state store, registries, Redis and task dispatch."""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from state.locks import RunLock
from state.protocol import StateStore
from state.url import open_store
from tasks.blueprint import Blueprint, check
from tasks.constants import (
    BRANCH_TASK,
    HARD_LIMIT_GRACE_S,
    JOIN_TASK,
    OUTBOX_HINT_KEY,
    RUN_NODE_TASK,
    SNAPSHOT_CACHE_SIZE,
)
from tasks.errors import AppImportError
from tasks.registry import BlueprintRegistry, NodeRegistry, blueprints, nodes
from tasks.settings import Settings

if TYPE_CHECKING:
    from celery import Celery, Signature

    from state.models import Run

__all__ = ["Runtime", "get_runtime", "import_app", "load_user_code", "reset_runtime", "task_id"]

log = logging.getLogger("flowbridge.runtime")

_loaded: set[tuple[str, ...]] = set()


def import_app(settings: Settings) -> None:
    """Import the ``FLOWBRIDGE_APP`` modules (they register nodes and maybe blueprints).

    Raises:
        AppImportError: a module failed to import; it names the module and the cause.
    """
    for module in settings.app_modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            # Whatever user code raises at import, start-up must stop and say where.
            raise AppImportError(module, exc) from exc


def load_user_code(settings: Settings) -> list[Blueprint]:
    """Import ``FLOWBRIDGE_APP`` modules and load ``FLOWBRIDGE_BLUEPRINTS``; validate them all.

    Raises:
        AppImportError: a module failed to import.
        BlueprintError: a blueprint file is invalid, or a blueprint uses an unregistered node.
    """
    import_app(settings)
    key = (*settings.app_modules, *settings.blueprint_dirs)
    if settings.blueprint_dirs and key not in _loaded:
        blueprints.load_dirs(settings.blueprint_dirs)
    _loaded.add(key)
    known = nodes.names()
    for bp in blueprints.all():
        check(bp, known_uses=known, max_delay_s=settings.max_delay_s)
    return blueprints.all()


def task_id(run_id: str, node_id: str, iteration: int, attempt: int) -> str:
    """Deterministic Celery task id of one attempt of one node, so cancel can revoke it."""
    return f"{run_id}:{node_id}:{iteration}:{attempt}"


class Runtime:
    """What engine code needs in one process; created after fork, never shared across one."""

    def __init__(self, settings: Settings, *, app: Celery | None = None) -> None:
        """Open (lazily) the store and Redis that ``settings`` name."""
        self.settings = settings
        offset = settings.clock_offset_s
        #: The engine's clock: wall time, shifted by FLOWBRIDGE_CLOCK_OFFSET_S.
        self.clock: Callable[[], float] = (lambda: time.time() + offset) if offset else time.time
        self.store: StateStore = open_store(
            settings.state_url,
            env=settings.env,
            retention_s=settings.retention_days * 86400,
            clock=self.clock if offset else None,
        )
        self.nodes: NodeRegistry = nodes
        self.blueprints: BlueprintRegistry = blueprints
        self._app = app
        self._redis: redis.Redis[bytes] | None = None
        self._snapshots: OrderedDict[str, Blueprint] = OrderedDict()
        self._lock = threading.Lock()

    def run_lock(self) -> RunLock:
        """The per-run Redis lock paired with the store's fence."""
        return RunLock(self.redis, self.store, prefix=self.settings.redis_prefix)

    def ensure_schema(self) -> None:
        """Create the embedded SQLite schema on start; Scylla's is the ``release:`` step's job."""
        if self.settings.state_url.startswith("sqlite"):
            self.store.migrate()

    @property
    def app(self) -> Celery:
        """The Celery app that tasks are sent with."""
        if self._app is None:
            from tasks.celeryapp import app

            self._app = app
        return self._app

    @property
    def redis(self) -> redis.Redis[bytes]:
        """A Redis client for hints and locks."""
        if self._redis is None:
            url, cert_reqs = self.settings.redis_url, self.settings.redis_ssl_cert_reqs
            self._redis = (
                redis.Redis.from_url(url)
                if cert_reqs is None
                else redis.Redis.from_url(url, ssl_cert_reqs=cert_reqs)
            )
        return self._redis

    def load_run(self, run_id: str) -> tuple[Run, Blueprint | None] | None:
        """Read a run and its blueprint, decoding the snapshot only on a cache miss."""
        with self._lock:
            bp = self._snapshots.get(run_id)
        run = self.store.get_run(run_id, snapshot=bp is None)
        if run is None:
            return None
        if bp is None:
            # A cancel marker (a cancel before its start) has no snapshot and no blueprint.
            return run, (self.blueprint_of(run) if run.snapshot else None)
        return run, bp

    def blueprint_of(self, run: Run) -> Blueprint:
        """The blueprint snapshot the run started with (immutable, so cached per run)."""
        with self._lock:
            bp = self._snapshots.get(run.run_id)
            if bp is not None:
                self._snapshots.move_to_end(run.run_id)
                return bp
        snapshot = run.snapshot
        if not snapshot:
            # Read without its snapshot, and evicted meanwhile: read it now.
            full = self.store.get_run(run.run_id)
            snapshot = full.snapshot if full is not None else {}
        bp = Blueprint.from_dict(snapshot)
        with self._lock:
            self._snapshots[run.run_id] = bp
            if len(self._snapshots) > SNAPSHOT_CACHE_SIZE:
                self._snapshots.popitem(last=False)
        return bp

    def signature(
        self,
        bp: Blueprint,
        run_id: str,
        node_id: str,
        *,
        task: str = RUN_NODE_TASK,
        iteration: int = 0,
        attempt: int = 1,
        countdown: float | None = None,
        wake: bool = False,
    ) -> Signature:
        """The Celery signature of one node attempt, routed to its run's shard queue."""
        options: dict[str, Any] = {"task_id": task_id(run_id, node_id, iteration, attempt)}
        timeout = bp.node(node_id).config.timeout_s
        if timeout:
            # The node's timeout is the soft limit (raised in the task); the hard one kills.
            options["soft_time_limit"] = timeout
            options["time_limit"] = timeout + HARD_LIMIT_GRACE_S
        if countdown:
            options["countdown"] = countdown
        kwargs: dict[str, Any] = {
            "run_id": run_id,
            "node_id": node_id,
            "iteration": iteration,
            "attempt": attempt,
        }
        if wake:
            # A short timer's wake-up call; its id differs from the node's own task.
            kwargs["wake"] = True
            options["task_id"] += ":wake"
        return self.app.signature(task, kwargs=kwargs, **options)

    def dispatch(
        self,
        bp: Blueprint,
        run_id: str,
        node_id: str,
        *,
        iteration: int = 0,
        attempt: int = 1,
        countdown: float | None = None,
        wake: bool = False,
    ) -> None:
        """Send one node attempt to its run's shard queue."""
        self.signature(
            bp,
            run_id,
            node_id,
            iteration=iteration,
            attempt=attempt,
            countdown=countdown,
            wake=wake,
        ).apply_async()

    def dispatch_chord(
        self, bp: Blueprint, run_id: str, heads: list[str], join_id: str, *, iteration: int = 0
    ) -> None:
        """Run the branches starting at ``heads`` as a chord whose body fires ``join_id``."""
        from celery import chord

        header = [
            self.signature(bp, run_id, h, task=BRANCH_TASK, iteration=iteration) for h in heads
        ]
        body = self.app.signature(
            JOIN_TASK, kwargs={"run_id": run_id, "join_id": join_id, "iteration": iteration}
        )
        chord(header, body).apply_async()

    def hint_outbox(self) -> None:
        """Wake the bridge's outbox relay (a lost hint only delays: the relay also sweeps)."""
        key = self.settings.redis_prefix + OUTBOX_HINT_KEY
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, 0)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("outbox hint not sent (the relay's sweep will find the rows): %s", exc)


_runtime: Runtime | None = None
_runtime_pid: int | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime, created on first use (after fork) from the environment."""
    global _runtime, _runtime_pid
    with _runtime_lock:
        if _runtime is None or _runtime_pid != os.getpid():
            _runtime = Runtime(Settings.from_env())
            _runtime_pid = os.getpid()
        return _runtime


def reset_runtime(runtime: Runtime | None = None) -> None:
    """Install ``runtime`` (or forget the current one) for this process."""
    global _runtime, _runtime_pid
    with _runtime_lock:
        _runtime = runtime
        _runtime_pid = os.getpid() if runtime is not None else None
