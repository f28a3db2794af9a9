"""The event loop workflow code runs on: deterministic, single-threaded, never blocking.

``WorkflowLoop`` is an ``asyncio.AbstractEventLoop`` like Temporal's
``_WorkflowInstanceImpl``: a FIFO deque of ready callbacks that ``run_ready``
drains under ``_set_running_loop``; it never selects or sleeps. Its ``time()``
is the activation's recorded time, so ``loop.call_at``/``call_later`` — and with
them ``asyncio.sleep``, ``asyncio.timeout`` and ``asyncio.wait_for`` — become
durable timers: each asks ``on_timer`` for a timer command and runs its
callback only when that timer's input is applied. Every I/O, executor,
subprocess or signal method raises ``NonDeterministicCallError``.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
from collections.abc import Callable
from typing import Any

from tasks.workflow.errors import NonDeterministicCallError

__all__ = ["DurableTimer", "WorkflowLoop"]


class DurableTimer(asyncio.TimerHandle):
    """A ``call_at`` handle whose firing is a timer input, not the passing of time."""

    seq: int = -1


class WorkflowLoop(asyncio.AbstractEventLoop):
    """A deterministic loop for one activation of one workflow run."""

    def __init__(self, now: float) -> None:
        """Start at the activation's time ``now`` (epoch seconds)."""
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._now = now
        self._closed = False
        self._running = False
        #: Called with each new timer handle; returns its command's seq.
        self.on_timer: Callable[[DurableTimer], int] = _no_timers
        #: Called when a timer handle is cancelled before it fired.
        self.on_timer_cancelled: Callable[[DurableTimer], None] = lambda _h: None
        #: Errors that escaped callbacks (reported by the activation, never logged by asyncio).
        self.errors: list[dict[str, Any]] = []

    # --- time and scheduling ----------------------------------------------------------------
    def time(self) -> float:
        """The activation's recorded time: the same on every replay."""
        return self._now

    def set_time(self, now: float) -> None:
        """Move to the next activation's recorded time."""
        self._now = now

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        """Queue a callback (FIFO)."""
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """A durable timer ``delay`` seconds after the activation's time."""
        return self.call_at(self._now + delay, callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """A durable timer at ``when``: a timer command; the callback runs when it fires."""
        handle = DurableTimer(when, callback, args, self, context)
        handle.seq = self.on_timer(handle)
        return handle

    def fire(self, handle: DurableTimer) -> None:
        """The timer's input was applied: run its callback (unless it was cancelled)."""
        if not handle.cancelled():
            self._ready.append(handle)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        if isinstance(handle, DurableTimer):
            self.on_timer_cancelled(handle)

    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        """Threads are not allowed in workflow code."""
        raise NonDeterministicCallError("threads are not allowed in a workflow")

    # --- running ----------------------------------------------------------------------------
    def run_ready(self) -> int:
        """Run callbacks until none is ready; returns how many ran."""
        ran = 0
        self._running = True
        asyncio.events._set_running_loop(self)
        try:
            while self._ready:
                handle = self._ready.popleft()
                if not handle.cancelled():
                    handle._run()
                    ran += 1
        finally:
            asyncio.events._set_running_loop(None)
            self._running = False
        return ran

    def create_future(self) -> asyncio.Future[Any]:
        """A future of this loop."""
        return asyncio.Future(loop=self)

    def create_task(self, coro: Any, *, name: str | None = None, context: Any = None) -> Any:
        """A task of this loop (runs when the loop drains)."""
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def get_debug(self) -> bool:
        """Never in debug mode: debug mode looks at wall-clock durations."""
        return False

    def set_debug(self, enabled: bool) -> None:
        """Ignored (see ``get_debug``)."""

    def is_running(self) -> bool:
        """Whether the loop is draining callbacks now."""
        return self._running

    def is_closed(self) -> bool:
        """Whether the activation is over."""
        return self._closed

    def close(self) -> None:
        """End the activation's loop (pending callbacks are dropped)."""
        self._ready.clear()
        self._closed = True

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """Keep the error for the activation's report instead of logging it."""
        self.errors.append(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        """As ``call_exception_handler``."""
        self.errors.append(context)

    def get_exception_handler(self) -> None:
        """There is no custom handler."""
        return None

    def set_exception_handler(self, handler: Any) -> None:
        """Custom handlers are not allowed in a workflow."""
        raise NonDeterministicCallError("exception handlers cannot be set in a workflow")

    def get_task_factory(self) -> None:
        """Tasks are always plain ``asyncio.Task``s."""
        return None

    def set_task_factory(self, factory: Any) -> None:
        """Task factories are not allowed in a workflow."""
        raise NonDeterministicCallError("task factories cannot be set in a workflow")

    async def shutdown_asyncgens(self) -> None:
        """Async generators are closed with the activation's teardown."""

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """There is no executor."""

    def run_forever(self) -> None:
        """The activation drains the loop; workflow code cannot run it."""
        raise NonDeterministicCallError("a workflow cannot run its loop")

    def run_until_complete(self, future: Any) -> Any:
        """The activation drains the loop; workflow code cannot run it."""
        raise NonDeterministicCallError("a workflow cannot run its loop")

    def stop(self) -> None:
        """The activation stops the loop; workflow code cannot."""
        raise NonDeterministicCallError("a workflow cannot stop its loop")


def _no_timers(handle: DurableTimer) -> int:
    raise NonDeterministicCallError("timers need a workflow context")


def _forbidden(name: str) -> Callable[..., Any]:
    def method(self: WorkflowLoop, *args: Any, **kwargs: Any) -> Any:
        raise NonDeterministicCallError(
            f"loop.{name}() is I/O, a thread or a subprocess: not allowed in a workflow "
            "(do it in an activity, or use ctx.side_effect)"
        )

    method.__name__ = name
    method.__doc__ = f"``{name}`` is not allowed in a workflow."
    return method


for _name in (
    "add_reader",
    "add_writer",
    "remove_reader",
    "remove_writer",
    "add_signal_handler",
    "remove_signal_handler",
    "run_in_executor",
    "set_default_executor",
    "getaddrinfo",
    "getnameinfo",
    "create_connection",
    "create_server",
    "create_unix_connection",
    "create_unix_server",
    "create_datagram_endpoint",
    "connect_accepted_socket",
    "connect_read_pipe",
    "connect_write_pipe",
    "subprocess_exec",
    "subprocess_shell",
    "sendfile",
    "start_tls",
    "sock_recv",
    "sock_recv_into",
    "sock_recvfrom",
    "sock_recvfrom_into",
    "sock_sendall",
    "sock_sendto",
    "sock_connect",
    "sock_accept",
    "sock_sendfile",
):
    setattr(WorkflowLoop, _name, _forbidden(_name))
