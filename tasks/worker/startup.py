"""What a worker and beat do when they start and stop: load user code (or exit), presence."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import signals

from state.errors import FlowbridgeError
from tasks.loading import load_user_code
from tasks.runtime import Runtime
from tasks.settings import Settings
from tasks.worker.app import get_runtime
from tasks.worker.liveness import Liveness
from tasks.worker.metrics import prepare_multiprocess, process_metrics, serve_metrics
from tasks.worker.port import CeleryPort
from tasks.worker.presence import Presence

__all__ = ["EXIT_CONFIG"]

log = logging.getLogger("flowbridge.worker")

#: Exit code of a worker or beat that cannot start (bad configuration, user code or blueprint).
EXIT_CONFIG = 2

_presence: list[Presence] = []
_liveness: list[Liveness] = []


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
    if Settings.from_env().metrics_port:
        # Before prometheus_client is imported: the pool's children count in files.
        prepare_multiprocess()
    runtime = _start_or_exit("worker")
    runtime.ensure_schema()
    runtime.store.close()
    if runtime.settings.metrics_port:
        serve_metrics(runtime.settings.metrics_port, multiprocess=True)
        runtime.metrics = process_metrics()


@signals.worker_process_init.connect
def _count_in_the_child(**_: Any) -> None:
    runtime = get_runtime()
    if runtime.settings.metrics_port:
        runtime.metrics = process_metrics()


@signals.worker_process_shutdown.connect
def _forget_the_child(pid: int | None = None, **_: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and pid is not None:
        from prometheus_client import multiprocess

        # Its counters stay in the totals; its live gauges go.
        multiprocess.mark_process_dead(pid)


@signals.worker_ready.connect
def _announce_worker(sender: Any = None, **_: Any) -> None:
    # After the pool started: the refresh thread must not exist when the pool forks.
    runtime = get_runtime()
    assert isinstance(runtime.port, CeleryPort)
    presence = Presence(
        runtime.port.redis,
        runtime.settings,
        role="worker",
        name=str(getattr(sender, "hostname", None) or "worker"),
        nodes=runtime.nodes.names(),
        blueprints=[f"{b.id}@{b.version}" for b in runtime.blueprints.all()],
    )
    presence.announce()
    presence.start_refresh()
    _presence.append(presence)
    liveness = Liveness(runtime.port.redis, runtime.settings, name=presence.me.name)
    liveness.start()
    _liveness.append(liveness)


@signals.worker_shutdown.connect
def _withdraw_worker(**_: Any) -> None:
    while _presence:
        _presence.pop().withdraw()
    while _liveness:
        _liveness.pop().stop()


@signals.beat_init.connect
def _load_user_code_in_beat(**_: Any) -> None:
    _start_or_exit("beat")
