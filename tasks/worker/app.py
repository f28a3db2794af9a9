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
from tasks.errors import NodeFailedError
from tasks.runtime import Runtime, open_state
from tasks.settings import Settings
from tasks.tracing import TRACE_HEADERS, span
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


def _trace_parent(task: Task) -> dict[str, str]:
    """The trace context the task message carries (``tasks.tracing``), if any."""
    found: dict[str, str] = {}
    nested = getattr(task.request, "headers", None) or {}
    for name in TRACE_HEADERS:
        value = getattr(task.request, name, None) or nested.get(name)
        if isinstance(value, str):
            found[name] = value
    return found


def _attempt_span(task: Task, run_id: str, node_id: str, attempt: int) -> Any:
    return span(
        f"flowbridge.node {node_id}",
        parent=_trace_parent(task),
        attributes={
            "flowbridge.run_id": run_id,
            "flowbridge.node": node_id,
            "flowbridge.attempt": attempt,
            "celery.task_id": str(task.request.id),
        },
    )


def _delivery(task: Task) -> dict[str, Any]:
    """What the engine needs to know of this delivery: redelivered, and by which worker."""
    return {
        "redelivered": bool((task.request.delivery_info or {}).get("redelivered")),
        "worker": task.request.hostname,
    }


# ``throws``: an expected failure, logged in one line without a traceback.
@app.task(name=RUN_NODE_TASK, bind=True, ignore_result=True, throws=(NodeFailedError,))
def run_node(
    self: Task, run_id: str, node_id: str, iteration: int = 0, attempt: int = 1, wake: bool = False
) -> str:
    """Run one attempt of one node (at least once; its state effects apply once).

    Returns how the attempt ended (``completed``, ``retry``, ``waiting``, ...), which
    Flower shows as the result of a succeeded task. A node that failed for good raises
    ``NodeFailedError`` after the engine committed the failure: the task fails (acked,
    never redelivered), and Flower and Celery events count it as a failure.
    """
    from tasks.engine import execute_node

    rt = get_runtime()
    with _attempt_span(self, run_id, node_id, attempt) as current:
        step = execute_node(rt, run_id, node_id, iteration, attempt, wake=wake, **_delivery(self))
        if current is not None:
            current.set_attribute("flowbridge.outcome", step.kind)
    if step.kind == "failed":
        rec = rt.store.get_node(run_id, node_id, iteration)
        raise NodeFailedError(rec.error if rec is not None and rec.error else f"{node_id} failed")
    return step.kind


@app.task(name=BRANCH_TASK, bind=True)
def run_branch(
    self: Task, run_id: str, node_id: str, iteration: int = 0, attempt: int = 1
) -> dict[str, str]:
    """A chord header: run a branch node by node; never raises, returns only ids and outcomes."""
    from tasks.engine import execute_node

    rt = get_runtime()
    with _attempt_span(self, run_id, node_id, attempt):
        step = execute_node(rt, run_id, node_id, iteration, attempt, chord=True, **_delivery(self))
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
                run_attempt=loaded[0].attempt,
            )
            # The replacement keeps this task's place in the chord.
            return self.replace(rt.port.signature(nxt))  # type: ignore[no-any-return]
    return {"node": node_id, "outcome": step.kind}


@app.task(name=JOIN_TASK, bind=True, ignore_result=True)
def fire_join(self: Task, results: Any, run_id: str, join_id: str, iteration: int = 0) -> str:
    """A chord body: fire the join once (the state store's conditional write decides)."""
    from tasks.engine import fire_from_chord

    return fire_from_chord(get_runtime(), run_id, join_id, iteration)


@app.task(name=RECONCILE_TASK, ignore_result=True)
def reconcile() -> dict[str, int]:
    """Fire due timers and re-emit stalled runs' jobs (``tasks.reconciler``)."""
    from tasks.reconciler import reconcile_once

    return reconcile_once(get_runtime())
