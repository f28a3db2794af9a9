"""What the benchmark's worker processes run: flowbridge nodes and blueprints, and raw Celery.

* flowbridge's bridge and worker import this module through
  ``FLOWBRIDGE_APP=bench.apps``: it registers the no-op and latency nodes and the
  linear and one-node blueprints (join blueprints are in ``bench.joins``, which
  only loads where joins validate).
* The raw-Celery baseline worker runs ``celery -A bench.apps:baseline worker``:
  ``baseline`` is a plain Celery app configured like flowbridge's (JSON only,
  acks late, the same prefetch and visibility timeout, Redis broker and result
  backend) but without flowbridge's routing or state.

Both kinds of worker announce readiness by writing ``BENCH_READY_FILE`` from
Celery's ``worker_ready`` signal, so the benchmark can run them at
``--loglevel=WARNING`` (INFO logs two lines per task, a cost neither side
should pay).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import redis
from celery import Celery, signals

from flowbridge import NodeContext, WorkflowContext, activity, node, register_blueprint, workflow

__all__ = [
    "BASELINE_QUEUE",
    "LATENCY_KEY",
    "baseline",
    "baseline_config",
    "make_baseline_app",
]

#: Redis list (in each side's own database) that latency nodes and tasks append to.
LATENCY_KEY = "bench:latency"
#: The one queue of the raw-Celery baseline.
BASELINE_QUEUE = "bench.raw"
#: The same values flowbridge's Celery app uses by default (tasks/settings.py).
VISIBILITY_TIMEOUT_S = 600.0
PREFETCH = 4


@cache
def _redis() -> redis.Redis[bytes]:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def record_latency(sent_at: float) -> None:
    """Append ``now - sent_at`` (seconds) to the latency list: the first thing a node does."""
    started = time.time()
    _redis().rpush(LATENCY_KEY, f"{started - sent_at:.6f}")


# --- flowbridge -------------------------------------------------------------


@node("bench.noop")
def noop(ctx: NodeContext) -> None:
    """A node that does nothing: what is measured is flowbridge's own cost."""
    return None


@node("bench.stamp")
def stamp(ctx: NodeContext) -> None:
    """Record how long after its start message was sent this run's first node began."""
    record_latency(float(ctx.input["sent_at"]))


def linear(blueprint_id: str, length: int) -> dict[str, Any]:
    """A blueprint of ``length`` no-op nodes in a line."""
    ids = [f"n{i:03d}" for i in range(length)]
    return {
        "id": blueprint_id,
        "nodes": [{"id": i, "uses": "bench.noop"} for i in ids],
        "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(ids)],
    }


CHAIN_LENGTH = 50
STEPS = 10
register_blueprint(linear("bench.chain50", CHAIN_LENGTH))
register_blueprint(linear("bench.chain10", STEPS))
register_blueprint({"id": "bench.one", "nodes": [{"id": "only", "uses": "bench.noop"}]})


@activity("bench.noop-activity")
def noop_activity(i: int) -> int:
    """An activity that does nothing: what is measured is the workflow engine's cost."""
    return i


@workflow("bench.wf10")
async def wf10(ctx: WorkflowContext, data: Any) -> int:
    """``STEPS`` sequential activities: DBOS's ten ``@DBOS.step`` in one ``@DBOS.workflow``."""
    total = 0
    for i in range(STEPS):
        total += await ctx.activity(noop_activity, i)
    return total


register_blueprint({"id": "bench.stamp", "nodes": [{"id": "stamp", "uses": "bench.stamp"}]})


# --- raw Celery ------------------------------------------------------------


def baseline_config(env: Mapping[str, str]) -> dict[str, Any]:
    """Celery settings of the baseline: flowbridge's (tasks/celeryapp.py) minus its routing."""
    url = env["REDIS_URL"]
    transport: dict[str, Any] = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    prefix = env.get("BENCH_REDIS_PREFIX", "")
    if prefix:
        transport["global_keyprefix"] = prefix
    return {
        "broker_url": url,
        "result_backend": url,
        "broker_transport_options": transport,
        "result_backend_transport_options": dict(transport),
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_default_queue": BASELINE_QUEUE,
        "worker_prefetch_multiplier": PREFETCH,
        "worker_hijack_root_logger": False,
    }


def make_baseline_app(env: Mapping[str, str] | None = None) -> Celery:
    """A baseline Celery app configured from ``env`` (default: the environment, when first used).

    The benchmark process makes one per scenario (each has its own Redis prefix);
    the worker uses ``baseline`` below. Tasks are sent by name, so the
    benchmark's apps need no task definitions.
    """
    app = Celery("bench.baseline", set_as_current=False)
    if env is None:
        app.add_defaults(lambda: baseline_config(os.environ))
    else:
        app.conf.update(baseline_config(env))
    return app


baseline = make_baseline_app()


@baseline.task(name="bench.noop")  # type: ignore[untyped-decorator]
def raw_noop(**_: Any) -> None:
    """The baseline's no-op task (its result is stored: Celery's default)."""
    return None


@baseline.task(name="bench.stamp")  # type: ignore[untyped-decorator]
def raw_stamp(sent_at: float, **_: Any) -> None:
    """The baseline's latency task."""
    record_latency(sent_at)


@baseline.task(name="bench.join")  # type: ignore[untyped-decorator]
def raw_join(results: list[Any]) -> int:
    """The body of the baseline's chords."""
    return len(results)


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _announce_ready(**_: Any) -> None:
    path = os.environ.get("BENCH_READY_FILE")
    if path:
        Path(path).write_text(str(os.getpid()))
