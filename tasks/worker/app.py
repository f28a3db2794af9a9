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

from tasks.constants import (
    BRANCH_TASK,
    CHECK_DISPATCH_TASK,
    JOIN_TASK,
    RECONCILE_TASK,
    RUN_NODE_TASK,
    WF_ACTIVATE_TASK,
    WF_ACTIVITY_TASK,
    WF_RESOLVE_ERROR_TASK,
    WF_RESOLVE_TASK,
)
from tasks.errors import NodeFailedError
from tasks.leases import identity
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


def _attempt_span(
    task: Task, run_id: str, node_id: str, attempt: int, *, kind: str = "node"
) -> Any:
    return span(
        f"flowbridge.{kind} {node_id}",
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
        "claim": identity(task.request.hostname, task.request.id),
    }


# ``throws``: an expected failure, logged in one line without a traceback.
@app.task(name=RUN_NODE_TASK, bind=True, ignore_result=True, throws=(NodeFailedError,))
def run_node(
    self: Task,
    run_id: str,
    node_id: str,
    iteration: int = 0,
    attempt: int = 1,
    wake: bool = False,
    item: int | None = None,
) -> str:
    """Run one attempt of one node or batch item (at least once; its effects apply once).

    Returns how the attempt ended (``completed``, ``retry``, ``waiting``, ...), which
    Flower shows as the result of a succeeded task. A node that failed for good raises
    ``NodeFailedError`` after the engine committed the failure: the task fails (acked,
    never redelivered), and Flower and Celery events count it as a failure.
    """
    from tasks.engine import execute_node

    rt = get_runtime()
    with _attempt_span(self, run_id, node_id, attempt) as current:
        step = execute_node(
            rt, run_id, node_id, iteration, attempt, wake=wake, item=item, **_delivery(self)
        )
        if current is not None:
            current.set_attribute("flowbridge.outcome", step.kind)
    if step.kind == "failed":
        if item is not None:
            raise NodeFailedError(f"item {item} of {node_id} failed")
        rec = rt.store.get_node(run_id, node_id, iteration)
        raise NodeFailedError(rec.error if rec is not None and rec.error else f"{node_id} failed")
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
    with _attempt_span(self, run_id, node_id, attempt):
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
                run_attempt=loaded[0].attempt,
                item=item,
            )
            # The replacement keeps this task's place in the chord.
            return self.replace(rt.port.replacement(nxt))  # type: ignore[no-any-return]
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


@app.task(name=CHECK_DISPATCH_TASK, ignore_result=True)
def check_dispatch() -> dict[str, int]:
    """Re-dispatch node tasks lost between a queue and a worker (``tasks.reconciler``)."""
    from tasks.reconciler import check_dispatch as check

    return check(get_runtime())


# --- code workflows ---------------------------------------------------------------------------
@app.task(name=WF_ACTIVATE_TASK, ignore_result=True)
def wf_activate(run_id: str, item: dict[str, Any] | None = None) -> str:
    """Activate a code workflow run (``item``: an inbox item to add first, a timer's firing)."""
    from tasks.workflow.activation import activate

    rt = get_runtime()
    if item is not None:
        rt.store.workflows.put_inbox(run_id, str(item["key"]), item)
    return activate(rt, run_id)


@app.task(name=WF_ACTIVITY_TASK, bind=True, ignore_result=True, throws=(NodeFailedError,))
def wf_activity(
    self: Task,
    run_id: str,
    gen: int,
    seq: int,
    name: str,
    attempt: int = 1,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    timeout_s: float | None = None,
) -> str:
    """Run one attempt of an ``@activity`` and activate its run with the outcome."""
    from tasks.port import ActivityTask
    from tasks.workflow.activities import run_activity

    task = ActivityTask(
        run_id=run_id,
        gen=gen,
        seq=seq,
        name=name,
        attempt=attempt,
        args=tuple(args or ()),
        kwargs=dict(kwargs or {}),
        queue=self.request.delivery_info.get("routing_key") if self.request.delivery_info else None,
        timeout_s=timeout_s,
    )
    with _attempt_span(self, run_id, name, attempt, kind="activity") as current:
        outcome = run_activity(get_runtime(), task)
        if current is not None:
            current.set_attribute("flowbridge.outcome", outcome)
    if outcome == "failed":
        # Committed as the activity's outcome already (the workflow sees an ActivityError);
        # raising only makes Flower and Celery events count the failure, as for run_node.
        raise NodeFailedError(f"activity {name} of run {run_id} failed after attempt {attempt}")
    return outcome


@app.task(name=WF_RESOLVE_TASK, ignore_result=True)
def wf_resolve(result: Any, run_id: str, gen: int, seq: int, name: str) -> str:
    """A plain Celery task called as an activity returned: its result is the outcome."""
    from tasks.port import ActivityTask
    from tasks.workflow.activities import report_outcome

    task = ActivityTask(run_id=run_id, gen=gen, seq=seq, name=name, registered=False)
    return report_outcome(get_runtime(), task, value=result)


@app.task(name=WF_RESOLVE_ERROR_TASK, ignore_result=True)
def wf_resolve_error(failed: Any, *rest: Any, run_id: str, gen: int, seq: int, name: str) -> str:
    """A plain Celery task called as an activity failed: its error is the outcome.

    Celery calls an errback with the failed task's request and exception when it
    runs in the same worker, else with the task id (then the result backend has
    the exception).
    """
    from celery.result import AsyncResult

    from tasks.port import ActivityTask
    from tasks.workflow.activities import report_outcome

    exc = rest[0] if rest else None
    if exc is None:
        task_id = failed if isinstance(failed, str) else getattr(failed, "id", None)
        exc = AsyncResult(task_id, app=app).result if task_id else None
    task = ActivityTask(run_id=run_id, gen=gen, seq=seq, name=name, registered=False)
    error = {"name": name, "type": type(exc).__name__, "message": str(exc)}
    return report_outcome(get_runtime(), task, error=error)
