"""Code workflows and activities the end-to-end tests run in real Celery workers (FLOWBRIDGE_APP).

Activities count their side effects in Redis as ``tests/apps/e2e_nodes.py``
does: ``wf.<step>.calls`` counts every execution (activities run at least
once), ``wf.<step>`` counts the effect of an idempotent sink keyed by run and
step (what a payment API with an idempotency key would do): exactly once.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from typing import Any

import examples.kafka_workflow  # noqa: F401 - kafka-workflow's examples, for the protocol tests
from flowbridge import ActivityError, WorkflowContext, activity, workflow
from tests.apps.e2e_nodes import _redis, effect

#: A deploy's code: ``renamed`` is the next release of ``e2e-wf-waits``, which renamed a step.
VARIANT = os.environ.get("E2E_WF_VARIANT", "")


def _prefix() -> str:
    return os.environ.get("FLOWBRIDGE_REDIS_PREFIX", "")


@activity("e2e-wf-effect")
def wf_effect(run_id: str, step: str) -> dict[str, Any]:
    """Record one execution, and the idempotent effect once per (run, step)."""
    effect(f"wf.{step}.calls")
    if _redis().set(f"{_prefix()}idem:{run_id}:{step}", 1, nx=True):
        effect(f"wf.{step}")
    return {"step": step}


@activity("e2e-wf-effect-v2")
def wf_effect_v2(run_id: str, step: str) -> dict[str, Any]:
    """The next release's name for ``e2e-wf-effect`` (a rename: history no longer matches)."""
    return wf_effect(run_id, step)


@activity("e2e-wf-held")
def wf_held(run_id: str, step: str) -> dict[str, Any]:
    """Write this pool process's pid, then wait until the test opens the gate."""
    r = _redis()
    r.set(f"{_prefix()}pid:{step}", os.getpid())
    effect(f"wf.{step}.started")
    deadline = time.monotonic() + 60
    while not r.get(f"{_prefix()}gate:{step}") and time.monotonic() < deadline:
        time.sleep(0.05)
    return wf_effect(run_id, step)


@activity("e2e-wf-refuse", retry={"max_attempts": 2, "initial_interval_s": 0.05})
def wf_refuse(run_id: str, step: str) -> None:
    """Always fail (a declined card): the workflow compensates."""
    effect(f"wf.{step}.calls")
    raise RuntimeError(f"{step} refused")


@workflow("e2e-wf-steps")
async def steps(ctx: WorkflowContext, data: Any) -> dict[str, Any]:
    """``steps`` activities in sequence, each an idempotent effect; then one Kafka record."""
    n = int((data or {}).get("steps", 3))
    done = [(await ctx.activity(wf_effect, ctx.run_id, f"s{i}"))["step"] for i in range(n)]
    if (data or {}).get("topic"):
        ctx.emit(str(data["topic"]), {"run_id": ctx.run_id, "steps": done})
    return {"steps": done}


@workflow("e2e-wf-held")
async def held(ctx: WorkflowContext, data: Any) -> dict[str, Any]:
    """A step, a held step (the test kills the worker there), a step."""
    first = await ctx.activity(wf_effect, ctx.run_id, "before")
    middle = await ctx.activity(wf_held, ctx.run_id, "held")
    last = await ctx.activity(wf_effect, ctx.run_id, "after")
    return {"steps": [first["step"], middle["step"], last["step"]]}


@workflow("e2e-wf-saga")
async def saga(ctx: WorkflowContext, data: Any) -> dict[str, Any]:
    """Book two things in parallel and a third that is refused; undo in reverse order."""
    booked: list[str] = []

    async def book(step: str) -> None:
        await ctx.activity(wf_effect, ctx.run_id, step)
        booked.append(step)

    try:
        await ctx.all(book("car"), book("hotel"))
        await ctx.activity(wf_refuse, ctx.run_id, "flight")
    except (ActivityError, asyncio.CancelledError):
        for step in reversed(booked):
            await ctx.activity(wf_effect, ctx.run_id, f"undo-{step}")
        raise
    return {"booked": booked}


@workflow("e2e-wf-sleepy")
async def sleepy(ctx: WorkflowContext, data: Any) -> dict[str, Any]:
    """Sleep ``days`` (durable), then a step: a worker restart in between loses nothing."""
    await ctx.activity(wf_effect, ctx.run_id, "before")
    await ctx.sleep(timedelta(days=float((data or {}).get("days", 3))))
    await ctx.activity(wf_effect, ctx.run_id, "after")
    return {"woke": True}


@workflow("e2e-wf-waits")
async def waits(ctx: WorkflowContext, data: Any) -> dict[str, Any]:
    """A step, then an event; ``E2E_WF_VARIANT=renamed`` is a deploy that renamed the step."""
    step = wf_effect_v2 if VARIANT == "renamed" else wf_effect
    await ctx.activity(step, ctx.run_id, "first")
    got = await ctx.wait_event("go")
    await ctx.activity(wf_effect, ctx.run_id, "second")
    return {"event": got}


@activity("e2e-wf-whoami")
def wf_whoami(run_id: str, step: str) -> dict[str, Any]:
    """Record which Celery task ran this step (sequential activities may share one)."""
    from celery import current_task

    task_id = current_task.request.id if current_task else None
    _redis().rpush(f"{_prefix()}whoami:{run_id}", f"{step}={task_id}")
    return wf_effect(run_id, step)


@workflow("e2e-wf-tasks")
async def tasks_of_steps(ctx: WorkflowContext, data: Any) -> dict[str, Any]:
    """``steps`` activities in sequence that record the task each ran in."""
    n = int((data or {}).get("steps", 5))
    done = [(await ctx.activity(wf_whoami, ctx.run_id, f"w{i}"))["step"] for i in range(n)]
    return {"steps": done}
