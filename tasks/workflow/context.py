"""``ctx``: what workflow code may do. Every durable call issues its command when called.

So ``ctx.all(ctx.activity("a"), ctx.activity("b"))`` dispatches both, and
registering a compensation before awaiting the call that may need it (the
race kafka-workflow's README describes) just works. Everything that could
differ between a live run and its replay — time, randomness, ids, I/O — comes
from here, recorded or derived from the run id.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from tasks.context import emitted_value
from tasks.workflow.errors import ContinueAsNew, WorkflowEvicted
from tasks.workflow.machine import DurableFuture, call_name

if TYPE_CHECKING:
    from tasks.workflow.machine import Machine

__all__ = ["Ref", "WorkflowContext"]

T = TypeVar("T")

#: How an activity is stopped when it loses a race or its workflow is cancelled.
CANCEL_MODES = ("revoke", "terminate", "abandon")


class Ref:
    """A resumable suspension: ``await`` it; a ``{"ref": id, "value": V}`` message resumes it."""

    def __init__(self, ref_id: str, future: DurableFuture) -> None:
        """Wrap the ref's future."""
        self.id = ref_id
        self._future = future

    def __await__(self) -> Any:
        return self._future.__await__()

    def cancel(self) -> bool:
        """Stop waiting for this ref."""
        return self._future.cancel()

    def __repr__(self) -> str:
        return f"<Ref {self.id}>"


class _QuietWhileReplaying(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that says nothing while history is replayed or the activation is torn down."""

    def __init__(self, logger: logging.Logger, machine: Machine) -> None:
        super().__init__(logger, {})
        self.machine = machine

    def isEnabledFor(self, level: int) -> bool:
        if self.machine.replaying or self.machine.evicted:
            return False
        return super().isEnabledFor(level)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"run {self.machine.run_id}: {msg}", kwargs


class WorkflowContext:
    """The ``ctx`` of an ``@workflow`` function."""

    def __init__(self, machine: Machine) -> None:
        """Act through ``machine``."""
        self._m = machine
        self.logger = _QuietWhileReplaying(logging.getLogger("flowbridge.workflow.user"), machine)

    # --- what the run is --------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._m.run_id

    @property
    def input(self) -> Any:
        """The run's input (also the workflow function's second argument)."""
        return self._m.input

    @property
    def is_replaying(self) -> bool:
        """Whether the code is re-running recorded history (its durable calls are not new)."""
        return self._m.replaying

    # --- durable calls ----------------------------------------------------------------------
    def activity(
        self,
        target: str | Callable[..., Any] | Any,
        *args: Any,
        queue: str | None = None,
        retry: dict[str, Any] | None = None,
        timeout: timedelta | float | None = None,
        cancel: str = "revoke",
        **kwargs: Any,
    ) -> DurableFuture:
        """Run an activity (a Celery task, ``@activity`` or by name); await its result.

        ``retry`` (``{"max_attempts", "initial_interval_s", "backoff", "max_interval_s"}``)
        and ``timeout`` override the activity's own; ``cancel`` says what a cancel
        does to it: ``revoke`` (it does not start), ``terminate`` (it is killed),
        ``abandon`` (it runs on; its result is ignored).
        """
        if cancel not in CANCEL_MODES:
            raise ValueError(f"cancel must be one of {', '.join(CANCEL_MODES)}, not {cancel!r}")
        name = call_name(target)
        payload: dict[str, Any] = {"args": [list(args), kwargs], "cancel": cancel}
        if queue is not None:
            payload["queue"] = queue
        if retry is not None:
            payload["retry"] = dict(retry)
        if timeout is not None:
            payload["timeout_s"] = _seconds(timeout)
        seq = self._m.issue("activity", name, payload)
        return self._m.future(seq, "activity")

    async def sleep(self, delay: timedelta | float) -> None:
        """Sleep durably (days are fine): a timer in the state store, not a Celery countdown."""
        await asyncio.sleep(_seconds(delay))

    def wait_event(self, name: str, *, timeout: timedelta | float | None = None) -> Awaitable[Any]:
        """Wait for the event ``name`` (sent with ``flowbridge signal``); its payload.

        An event that arrived before the wait is kept for it. With ``timeout``,
        ``TimeoutError`` is raised when it passes first.
        """
        fut = self._m.wait_event(name)
        if timeout is None:
            return fut
        return self._with_timeout(fut, _seconds(timeout))

    @staticmethod
    async def _with_timeout(fut: Awaitable[T], seconds: float) -> T:
        async with asyncio.timeout(seconds):
            return await fut

    def ref(self, id: str | None = None) -> Ref:
        """A suspension a ``{"ref": id, "value": V}`` message resumes (kafka-workflow's protocol).

        Ids are ``"<generation>.<seq>"`` unless named; a named ref may be created
        again once the previous one with that name settled.
        """
        ref_id, fut = self._m.ref(id)
        return Ref(ref_id, fut)

    def child(
        self, workflow: str | Any, input: Any = None, *, id: str | None = None
    ) -> DurableFuture:
        """Start a child workflow run; await its output (``ChildWorkflowError`` if it fails)."""
        name = workflow if isinstance(workflow, str) else getattr(workflow, "name", None)
        if not isinstance(name, str):
            raise TypeError(f"ctx.child needs a workflow name or an @workflow, not {workflow!r}")
        seq = self._m.next_seq
        child_id = id or f"{self.run_id}.{self._m.gen}.{seq}"
        self._m.issue("child", name, {"args": input, "run_id": child_id})
        return self._m.future(seq, "child")

    def emit(self, topic: str, value: Any, key: str | None = None, *, raw: bool = False) -> None:
        """Publish ``value`` to Kafka ``topic`` once this activation commits (at least once).

        The record's value is ``value`` as JSON; with ``raw=True`` it is the string
        itself (kafka-workflow's ``W.output``: a reservation id, ``"1000"``).
        """
        stored = emitted_value(topic, value, raw=raw)
        self._m.issue("emit", topic, {"key": self.run_id if key is None else key, "value": stored})

    # --- combinators ------------------------------------------------------------------------
    async def all(self, *aws: Awaitable[Any]) -> list[Any]:
        """Await all, started in argument order; the first failure cancels the rest and raises."""
        return await self._m.all(aws)

    async def race(self, *aws: Awaitable[Any], **named: Awaitable[Any]) -> Any:
        """The first to settle wins (its value, or its failure raised); the rest are cancelled.

        With keyword arguments the result is ``(name, value)``.
        """
        if aws and named:
            raise TypeError("ctx.race takes awaitables or named awaitables, not both")
        if named:
            names = list(named)
            index, value = await self._m.race(list(named.values()))
            return names[index], value
        _, value = await self._m.race(list(aws))
        return value

    # --- determinism ------------------------------------------------------------------------
    def now(self) -> float:
        """The activation's time (epoch seconds), the same on every replay."""
        return self._m.loop.time()

    def random(self) -> float:
        """A random float in [0, 1) from the run's own seeded generator."""
        return self._m.rng.random()

    def uuid4(self) -> uuid.UUID:
        """A random UUID from the run's own seeded generator."""
        return uuid.UUID(int=self._m.rng.getrandbits(128), version=4)

    def side_effect(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` once, live; on replay return what it returned then (JSON values only)."""
        m = self._m
        if m.evicted:
            raise WorkflowEvicted
        seq = m.next_seq
        if m.replaying:
            recorded = m.recorded(seq, "side_effect")
            value = recorded.payload.get("value") if recorded is not None else None
        else:
            value = fn()
        m.issue("side_effect", "", {"value": value})
        return value  # type: ignore[return-value]

    def patched(self, patch_id: str) -> bool:
        """Whether this run takes the new code path of change ``patch_id``.

        Live: records a marker and returns True. On replay: True only if the
        history has the marker here, consuming no seq otherwise, so runs that
        started before the change replay their old path.
        """
        m = self._m
        if patch_id in m.patches:
            return m.patches[patch_id]
        if m.replaying:
            taken = m.recorded(m.next_seq, "marker") is not None
            if taken:
                m.issue("marker", patch_id)
        else:
            m.issue("marker", patch_id)
            taken = True
        m.patches[patch_id] = taken
        return taken

    def deprecate_patch(self, patch_id: str) -> None:
        """After every run took ``patch_id``'s new path: consume its marker, never write one."""
        m = self._m
        if m.replaying and m.recorded(m.next_seq, "marker") is not None:
            m.issue("marker", patch_id)
        m.patches[patch_id] = True

    def continue_as_new(self, input: Any) -> None:
        """End this generation and start the next with ``input`` (same run id, fresh history)."""
        raise ContinueAsNew(input)


def _seconds(value: timedelta | float) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"a duration must not be negative, got {value!r}")
    return seconds
