"""``sleep`` and ``wait``: durable timers and events, kept in the state store.

Timers live in the store, so a sleep of days survives restarts and is fired by
the reconciler; one shorter than half the visibility timeout also gets a
Celery countdown as its wake-up call, which is safe because Redis will not
redeliver it early.
"""

from __future__ import annotations

from tasks.builtins.base import Builtin, BuiltinCall, BuiltinResult, duration_param
from tasks.errors import NodeError
from tasks.timefmt import iso_utc

__all__ = ["Sleep", "Wait"]


class Sleep(Builtin):
    """Park for ``params.duration``; the output says how long and until when."""

    uses = "sleep"

    def run(self, call: BuiltinCall) -> BuiltinResult:
        """Park on the first attempt; complete once the timer woke the node."""
        duration = duration_param(call, self.uses, "duration", required=True)
        assert duration is not None
        wake = call.wakeup()
        if wake is None:
            call.suspend(due_at=call.now() + duration)
            call.schedule_wake(duration)
            return None
        # ISO like every other time in the run JSON (an epoch float next to them misleads).
        due_iso = None if wake.due_at is None else iso_utc(wake.due_at)
        return {"slept_s": duration, "due_at": due_iso}, None


class Wait(Builtin):
    """Park until the event ``params.event`` arrives (its payload is the output) or a timeout."""

    uses = "wait"

    def run(self, call: BuiltinCall) -> BuiltinResult:
        """Take an event that is already there, else park; a timeout takes ``timeoutAction``."""
        event = call.params.get("event")
        if not isinstance(event, str) or not event:
            raise NodeError(
                f"node {call.node_id!r} (wait) needs params.event, a name", retryable=False
            )
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
            return wake.payload, None
        action = call.params.get("timeoutAction", "timeout")
        return {"timed_out": True, "event": event}, str(action)
