"""What the reconciler does for code workflow runs: due timers, stalled activations, lost tasks.

- A due timer row becomes the run's ``t:<gen>.<seq>`` inbox item and an
  activation; a row whose item was consumed already is a stale hint: deleted.
- A stalled run (no progress for ``FLOWBRIDGE_STALLED_AFTER_S``) is claimed once
  per stall (``mark_reconciled``, fenced), then its activation is sent again
  (a commit not dispatched, an inbox item nobody applied, a blocked run whose
  code may have been fixed) and its outstanding activities are sent again
  (their messages may be gone with a Redis failure: activities run at least
  once, so a duplicate is the documented cost).
"""

from __future__ import annotations

import logging

from state.records import Run
from state.workflows import consumed_keys
from tasks.port import ActivationTask
from tasks.runtime import Runtime
from tasks.workflow.activation import deliver
from tasks.workflow.dispatch import activity_task, outstanding_activities
from tasks.workflow.history import Activation, Input

__all__ = ["fire_workflow_timers", "reconcile_workflow"]

log = logging.getLogger("flowbridge.reconciler")


def fire_workflow_timers(rt: Runtime, *, now: float, limit: int) -> int:
    """Deliver due timers to their runs; returns how many were new."""
    fired = 0
    wf = rt.store.workflows
    for timer in wf.due_timers(now=now, limit=limit):
        item = Input(key=f"t:{timer.gen}.{timer.seq}", type="timer", seq=timer.seq, gen=timer.gen)
        if deliver(rt, timer.run_id, item):
            fired += 1
        else:
            # Fired before (by its wake-up call): the hint is stale.
            wf.set_timers(timer.run_id, gen=timer.gen, delete=[(timer.seq, timer.due_at)])
    return fired


def reconcile_workflow(rt: Runtime, run: Run, fence: int) -> list[str]:
    """Claim one stall of a code workflow run and send again what may have been lost."""
    state = rt.store.workflows.load(run.run_id)
    if state is None:
        return []
    if not rt.store.mark_reconciled(run.run_id, stalled_since=run.updated_at, fence=fence):
        return []
    history = [Activation.from_json(a) for a in state.history]
    actions: list[str] = []
    for cmd in outstanding_activities(history):
        rt.port.dispatch_activity(activity_task(run.run_id, state.gen, cmd))
        actions.append(f"re-sent activity {cmd.name} (seq {cmd.seq})")
    used = consumed_keys(state.history)
    pending = [k for k, _ in state.inbox if k not in used]
    if pending or state.dispatched < state.last or state.blocked is not None:
        rt.port.dispatch_activation(
            ActivationTask(run_id=run.run_id, time_limit_s=rt.settings.activation_cpu_s)
        )
        actions.append("activated")
    return actions
