"""Running one activity attempt, and reporting its outcome to its workflow run.

An activity runs at least once (a redelivered task runs it again): give
external systems a key built from ``ctx.run_id`` so its effect happens once.
Its retries are run here, without workflow code: a failure below the policy's
``max_attempts`` sends the next attempt after the backoff; the last failure,
or a success, becomes the run's inbox item ``r:<seq>`` and the run is
activated in this process at once (one Celery message per step, not two).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from dataclasses import replace
from typing import Any

from state.records import RUN_ACTIVE
from tasks.faults import crash_point
from tasks.port import ActivityTask
from tasks.runtime import InlineBudget, Runtime
from tasks.workflow.api import RetryPolicy, activities
from tasks.workflow.history import Input

__all__ = ["report_outcome", "run_activity"]

log = logging.getLogger("flowbridge.workflow")


def run_activity(rt: Runtime, task: ActivityTask, *, inline: InlineBudget | None = None) -> str:
    """Run one attempt of a registered activity and report what happened; the outcome.

    ``inline``: the activation this outcome causes may keep the next activity back for
    this task (``InlineBudget.held``).
    """
    run = rt.store.get_run(task.run_id, snapshot=False)
    if run is None or run.status not in RUN_ACTIVE:
        # Cancelled or finished meanwhile: revocation is only a broadcast, the run decides.
        return "skipped"
    defn = activities.get(task.name)
    if defn is None:
        error = f"no activity {task.name!r} is registered on this worker (FLOWBRIDGE_APP)"
        return report_outcome(
            rt, task, error={"name": task.name, "type": "UnknownActivity", "message": error}
        )
    try:
        value = _call(defn.fn, task.args, task.kwargs or {})
        json.dumps(value)
    except rt.port.timeout_errors:
        return _failed(
            rt, task, defn.retry, "TimeoutError", f"timed out after {task.timeout_s}s", inline
        )
    except Exception as exc:
        log.info(
            "run %s activity %s attempt %d raised",
            task.run_id,
            task.name,
            task.attempt,
            exc_info=True,
        )
        return _failed(rt, task, defn.retry, type(exc).__name__, str(exc), inline)
    crash_point("in_activity")
    return report_outcome(rt, task, value=value, inline=inline)


def _call(fn: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(aw: Any) -> Any:
    return await aw


def _failed(
    rt: Runtime,
    task: ActivityTask,
    policy: RetryPolicy,
    kind: str,
    message: str,
    inline: InlineBudget | None,
) -> str:
    if task.attempt < policy.max_attempts:
        delay = min(policy.delay_s(task.attempt), rt.settings.max_delay_s)
        rt.port.dispatch_activity(replace(task, attempt=task.attempt + 1, countdown=delay))
        return "retry"
    error = {"name": task.name, "type": kind, "message": message}
    return report_outcome(rt, task, error=error, inline=inline)


def report_outcome(
    rt: Runtime,
    task: ActivityTask,
    *,
    value: Any = None,
    error: dict[str, Any] | None = None,
    inline: InlineBudget | None = None,
) -> str:
    """Activate the run here with the outcome (once per seq; the inbox keeps it if not now)."""
    from tasks.workflow.activation import activate

    item = Input(
        key=f"r:{task.gen}.{task.seq}",
        type="result",
        seq=task.seq,
        gen=task.gen,
        value=value,
        error=error,
    )
    outcome = activate(rt, task.run_id, inline=inline, item=item)
    log.debug("run %s activity %s: %s", task.run_id, task.name, outcome)
    return "failed" if error is not None else "completed"
