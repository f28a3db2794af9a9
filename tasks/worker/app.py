"""The Celery app: JSON only, acks late, one queue per shard, routed by run id; its tasks.

``celery -A tasks worker`` and ``celery -A tasks beat`` find ``app`` through
``tasks.app``. The configuration is read from the environment when Celery
first needs it, never at import. The tasks are thin: each hands its delivery
to the engine (``tasks.engine``) with this process's runtime.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from celery import Celery, Task

from tasks.constants import BRANCH_TASK, JOIN_TASK, RECONCILE_TASK, RUN_NODE_TASK
from tasks.runtime import Runtime, open_state
from tasks.settings import Settings
from tasks.worker.config import celery_config
from tasks.worker.port import CeleryPort

__all__ = ["app", "get_runtime", "reset_runtime", "runtime_from_settings"]

app = Celery("flowbridge", set_as_current=False)
# A callable default is a promise: Celery calls it when the configuration is first needed
# (worker, beat or the first send), so the environment is read at start-up, not at import.
app.add_defaults(lambda: celery_config(Settings.from_env()))


def runtime_from_settings(settings: Settings) -> Runtime:
    """A runtime whose port is this Celery app and the deployment's Redis."""
    store = open_state(settings)
    return Runtime(settings, store=store, port=CeleryPort(settings, store, app=app))


_runtime: Runtime | None = None
_runtime_pid: int | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime, created on first use (after fork) from the environment."""
    global _runtime, _runtime_pid
    with _runtime_lock:
        if _runtime is None or _runtime_pid != os.getpid():
            _runtime = runtime_from_settings(Settings.from_env())
            _runtime_pid = os.getpid()
        return _runtime


def reset_runtime(runtime: Runtime | None = None) -> None:
    """Install ``runtime`` (or forget the current one) for this process."""
    global _runtime, _runtime_pid
    with _runtime_lock:
        _runtime = runtime
        _runtime_pid = os.getpid() if runtime is not None else None


def _delivery(task: Task) -> dict[str, Any]:
    """What the engine needs to know of this delivery: redelivered, and by which worker."""
    return {
        "redelivered": bool((task.request.delivery_info or {}).get("redelivered")),
        "worker": task.request.hostname,
    }


@app.task(name=RUN_NODE_TASK, bind=True, ignore_result=True)
def run_node(
    self: Task,
    run_id: str,
    node_id: str,
    iteration: int = 0,
    attempt: int = 1,
    wake: bool = False,
    item: int | None = None,
) -> str:
    """Run one attempt of one node or batch item (at least once; its effects apply once)."""
    from tasks.engine import execute_node

    step = execute_node(
        get_runtime(), run_id, node_id, iteration, attempt, wake=wake, item=item, **_delivery(self)
    )
    return step.kind


@app.task(name=BRANCH_TASK, bind=True)
def run_branch(
    self: Task,
    run_id: str,
    node_id: str,
    iteration: int = 0,
    attempt: int = 1,
    item: int | None = None,
) -> dict[str, str]:
    """A chord header: run a branch node by node; never raises, returns only ids and outcomes."""
    from tasks.engine import execute_node

    rt = get_runtime()
    step = execute_node(
        rt, run_id, node_id, iteration, attempt, chord=True, item=item, **_delivery(self)
    )
    if step.next_node is not None or step.retry_attempt is not None:
        loaded = rt.load_run(run_id)
        if loaded is not None and loaded[1] is not None and isinstance(rt.port, CeleryPort):
            nxt = rt.node_task(
                loaded[1],
                run_id,
                step.next_node or node_id,
                iteration=iteration,
                attempt=step.retry_attempt or 1,
                countdown=step.countdown,
                branch=True,
                item=item,
            )
            # The replacement keeps this task's place in the chord.
            return self.replace(rt.port.signature(nxt))  # type: ignore[no-any-return]
    return {"node": node_id if item is None else f"{node_id}[{item}]", "outcome": step.kind}


@app.task(name=JOIN_TASK, bind=True, ignore_result=True)
def fire_join(
    self: Task,
    results: Any,
    run_id: str,
    join_id: str,
    iteration: int = 0,
    window: int | None = None,
) -> str:
    """A chord body: fire the join once (the state store's conditional write decides).

    ``window``: the chord was a window of a batch's items; the next window starts
    (or, after the last, the gather fires).
    """
    from tasks.engine import fire_from_chord

    return fire_from_chord(get_runtime(), run_id, join_id, iteration, window=window)


@app.task(name=RECONCILE_TASK, ignore_result=True)
def reconcile() -> dict[str, int]:
    """Fire due timers and re-emit stalled runs' jobs (``tasks.reconciler``)."""
    from tasks.reconciler import reconcile_once

    return reconcile_once(get_runtime())
