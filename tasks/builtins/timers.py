"""``sleep`` and ``wait``: durable timers, resumes and events, kept in the state store.

Timers live in the store, so a sleep of days survives restarts and is fired by
the reconciler; one shorter than half the visibility timeout also gets a
Celery countdown as its wake-up call, which is safe because Redis will not
redeliver it early.

As in flowcraft, a ``sleep`` passes its input on as its output, and a ``wait``
without an event name parks until it is resumed (``flowbridge resume RUN NODE
[--action A] [--output JSON]``) with the output and action it then completes
with. A ``wait`` with ``params.event`` (or flowcraft's ``eventName``) parks until
that event arrives for the run; its payload is the output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from tasks.builtins.base import (
    Builtin,
    BuiltinCall,
    BuiltinResult,
    duration_param,
    duration_problem,
    resumed,
)
from tasks.errors import NodeError

__all__ = ["Sleep", "Wait", "resume_name"]


def resume_name(node_id: str) -> str:
    """The event a node without an event name of its own is resumed by."""
    return f"resume:{node_id}"


def _action(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class Sleep(Builtin):
    """Park for ``params.duration``; the output is the node's input (flowcraft's passthrough)."""

    uses = "sleep"
    params: ClassVar[Mapping[str, str]] = {
        "duration": "how long: milliseconds, or '5s', '10m', '2h', '2d'",
    }

    def check(self, params: Mapping[str, Any]) -> list[str]:
        """The duration is required and must parse."""
        return duration_problem(params, "duration", required=True)

    def resume_event(self, node_id: str, params: Mapping[str, Any]) -> str | None:
        """A sleep may be resumed early, as in flowcraft."""
        return resume_name(node_id)

    def run(self, call: BuiltinCall) -> BuiltinResult:
        """Park on the first attempt; complete once the timer or a resume woke the node."""
        duration = duration_param(call, self.uses, "duration", required=True)
        assert duration is not None
        wake = call.wakeup()
        if wake is None:
            wake = call.suspend(event=resume_name(call.node_id), due_at=call.now() + duration)
            if wake is None:
                call.schedule_wake(duration)
                return None
        resume = resumed(wake)
        if resume is not None and resume.get("output") is not None:
            return resume["output"], _action(resume.get("action"))
        return call.input, None if resume is None else _action(resume.get("action"))


class Wait(Builtin):
    """Park until resumed (flowcraft) or until the event ``params.event`` arrives."""

    uses = "wait"
    params: ClassVar[Mapping[str, str]] = {
        "event": "the name of the event to wait for (without it: wait to be resumed)",
        "eventName": "flowcraft's name for 'event'",
        "timeout": "give up after this long: milliseconds, or '5s', '10m', '2h', '3d'",
        "timeoutAction": "the action of a timed-out wait (default 'timeout')",
    }

    @staticmethod
    def event_of(node_id: str, params: Mapping[str, Any]) -> str:
        """The event this wait parks on."""
        name = params.get("event") or params.get("eventName")
        return str(name) if name else resume_name(node_id)

    def check(self, params: Mapping[str, Any]) -> list[str]:
        """Names are non-empty strings; the timeout must parse."""
        problems = [
            f"params.{key} must be a non-empty string, got {params[key]!r}"
            for key in ("event", "eventName", "timeoutAction")
            if key in params and not (isinstance(params[key], str) and params[key])
        ]
        if "event" in params and "eventName" in params:
            problems.append("params.event and params.eventName name the same thing: keep one")
        return problems + duration_problem(params, "timeout", required=False)

    def resume_event(self, node_id: str, params: Mapping[str, Any]) -> str | None:
        """A wait is resumed on its own event."""
        return self.event_of(node_id, params)

    def run(self, call: BuiltinCall) -> BuiltinResult:
        """Take an event or resume already there, else park; a timeout takes ``timeoutAction``."""
        event = self.event_of(call.node_id, call.params)
        timeout = duration_param(call, self.uses, "timeout", required=False)
        wake = call.wakeup()
        if wake is None:
            due = None if timeout is None else call.now() + timeout
            wake = call.suspend(event=event, due_at=due)
            if wake is None:
                if timeout is not None:
                    call.schedule_wake(timeout)
                return None
        if wake.kind == "event":
            resume = resumed(wake)
            if resume is not None:
                return resume.get("output"), _action(resume.get("action"))
            return wake.payload, None
        action = call.params.get("timeoutAction", "timeout")
        if not isinstance(action, str):
            raise NodeError(f"node {call.node_id!r}: params.timeoutAction", retryable=False)
        return {"timed_out": True, "event": event}, action
