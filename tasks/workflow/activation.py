"""Activating a code workflow run: lock, read, replay, apply the inbox, commit once, dispatch.

``activate`` is what every wake-up of a run calls (a start, an activity's
outcome, a due timer, an event, a ref, a cancel): each writes an inbox item
first (keyed, so a redelivery is the same item) and then activates; an
activity's outcome is handed to the activation directly and written to the
inbox only when this activation cannot commit it.

1. Take the run's lock (owner token; unfenced: every write below is conditional
   on its own). Held: return — the holder re-reads the inbox after it releases,
   so no wake-up is lost.
2. Read the run, its generation's history and its unconsumed inbox.
3. Rebuild the run by replaying the history (``Machine``); a divergence is
   reported on the run (``blocked``), nothing is written, and the reconciler
   tries again later, so a fixed deploy resumes it.
4. Apply the new items as the next activation and commit it with one
   conditional write (activation ``n`` only after ``n - 1``): of two workers
   racing one run, one commits; the other's work is discarded.
5. Dispatch its commands (``tasks.workflow.dispatch``), idempotently, then mark
   the activation dispatched; a crash in between is repaired by the next
   activation or the reconciler, which dispatch again what is not marked. (When
   the only command is the activity this task runs next, the mark goes with the
   commit: a crash before it reports is its redelivery's, ``resend_held``.)

Guarantees: workflow code runs at least once per activation (replays are
pure); its state effects — the history, the run's end — apply exactly once;
activities run at least once (pass ``ctx.run_id``-based keys to external
systems); emitted records are published at least once with stable ids.
"""

from __future__ import annotations

import logging
from typing import Any

from state.history import HistoryKind
from state.records import RUN_ACTIVE, Run, RunStatus
from state.workflows import WorkflowState, consumed_keys
from tasks.events import lifecycle_events
from tasks.faults import crash_point
from tasks.port import ActivationTask
from tasks.runtime import InlineBudget, Runtime
from tasks.workflow.api import WorkflowDef, workflows
from tasks.workflow.dispatch import dispatch, holds_all
from tasks.workflow.errors import NonDeterminismError
from tasks.workflow.history import Activation, Input
from tasks.workflow.limits import check_limits
from tasks.workflow.machine import Machine

__all__ = [
    "WORKFLOW_KIND",
    "activate",
    "deliver",
    "is_workflow",
    "start_workflow",
    "workflow_of",
]

log = logging.getLogger("flowbridge.workflow")

#: ``snapshot["kind"]`` of a code workflow run.
WORKFLOW_KIND = "workflow"
#: Past a busy lock's expiry, when a busy activation looks again.
BUSY_SLACK_S = 0.25
#: Activations one call runs while new items keep arriving, before it hands off.
ROUNDS = 8


def is_workflow(run: Run) -> bool:
    """Whether the run is a code workflow run (its snapshot says so)."""
    return bool(run.snapshot) and run.snapshot.get("kind") == WORKFLOW_KIND


def workflow_of(run: Run) -> WorkflowDef | None:
    """The registered workflow (at the version the run pinned) a run executes, if any."""
    name = run.snapshot.get("workflow")
    version = run.snapshot.get("version")
    if not isinstance(name, str):
        return None
    return workflows.get(name, int(version) if isinstance(version, int | str) else None)


def start_workflow(
    rt: Runtime,
    defn: WorkflowDef,
    run_input: Any,
    *,
    run_id: str,
    parent: dict[str, Any] | None = None,
    protocol: str | None = None,
) -> tuple[bool, Run]:
    """Create a code workflow run (idempotent on ``run_id``) and activate it.

    ``parent`` links a child run to the durable call that started it
    (``{"run_id", "gen", "seq"}``): its end is delivered to that run.
    ``protocol="kafka-workflow"`` (a ``new:`` start) also sends its end to
    kafka-workflow's result or error topic.
    """
    snapshot: dict[str, Any] = {
        "kind": WORKFLOW_KIND,
        "workflow": defn.name,
        "version": defn.version,
    }
    if parent is not None:
        snapshot["parent"] = parent
    if protocol is not None:
        snapshot["protocol"] = protocol
    run = Run(
        run_id=run_id,
        blueprint_id=defn.name,
        version=str(defn.version),
        status=RunStatus.PENDING,
        input=run_input,
        snapshot=snapshot,
    )
    started = lifecycle_events(
        rt.settings, run_id, "started", workflow=defn.name, version=defn.version, input=run_input
    )
    created, stored = rt.store.create_run(run, start_nodes=(), outbox=started)
    if not created and stored.rejected:
        # A start of this id was rejected (the workflow was not deployed yet, say): this one,
        # its DLQ record replayed or sent again, starts the run (once).
        created = rt.store.restart_rejected(run, start_nodes=(), outbox=started)
        if created:
            stored = rt.store.get_run(run_id) or stored
    if created:
        rt.notify_outbox()
    if stored.status in RUN_ACTIVE and is_workflow(stored):
        start = Input(key="s:start", type="start", value=stored.input)
        deliver(rt, run_id, start)
    return created, stored


def deliver(rt: Runtime, run_id: str, item: Input, *, countdown: float | None = None) -> bool:
    """Put ``item`` into the run's inbox (once per key) and send an activation; True if new."""
    new = rt.store.workflows.put_inbox(run_id, item.key, item.to_json())
    if new:
        # A waiting run has work again: running, so a lost activation shows as a stall.
        rt.store.set_run_status(run_id, from_={RunStatus.WAITING}, to=RunStatus.RUNNING)
    rt.port.dispatch_activation(
        ActivationTask(
            run_id=run_id, countdown=countdown, time_limit_s=rt.settings.activation_cpu_s
        )
    )
    return new


def activate(
    rt: Runtime,
    run_id: str,
    *,
    inline: InlineBudget | None = None,
    item: Input | None = None,
) -> str:
    """Activate the run until its inbox holds nothing new; what happened (for logs and tests).

    With ``inline``, a lone next activity may be kept back in ``inline.held`` for the
    calling task to run itself (``tasks.workflow.dispatch``). ``item`` (an activity's
    outcome, reported by the task that ran it) goes into the activation directly, not
    through the inbox: it is written to the inbox only when this call does not commit it
    (the lock is busy, another activation won, the run is paused or blocked). Until the
    commit it is the task's (acknowledged late): a crash runs the activity again.
    """
    locks = rt.port.run_locks()
    outcome = "idle"
    for _ in range(ROUNDS):
        # Unfenced: the commit is conditional on the history (activation n only after n - 1),
        # so a holder whose lock expired loses there; a reconciler's claim is conditional on
        # the progress this commit records.
        with locks.hold(run_id, fenced=False) as fence:
            if fence is None:
                _keep(rt, run_id, item)
                # A live holder looks at the inbox again after releasing, so this item is
                # seen; a holder that died keeps the lock until it expires: look then.
                retry_in = locks.expires_in(run_id) + BUSY_SLACK_S
                rt.port.dispatch_activation(
                    ActivationTask(
                        run_id=run_id,
                        countdown=retry_in,
                        time_limit_s=rt.settings.activation_cpu_s,
                    )
                )
                return "busy"
            outcome = _activate_locked(rt, run_id, inline, item)
        if outcome in _KEEP_ITEM:
            _keep(rt, run_id, item)
        item = None
        if outcome == "paused":
            return outcome  # resuming the run activates it again
        # An item that arrived while the lock was held found it busy: look once more.
        state = rt.store.workflows.load(run_id)
        if state is None or state.run.status not in RUN_ACTIVE or state.blocked is not None:
            return outcome
        if not _new_items(state) and state.dispatched >= state.last:
            return outcome
    rt.port.dispatch_activation(
        ActivationTask(run_id=run_id, time_limit_s=rt.settings.activation_cpu_s)
    )
    return outcome


def _new_items(state: WorkflowState, direct: Input | None = None) -> list[Input]:
    used = consumed_keys(state.history)
    items = [Input.from_json(item) for key, item in state.inbox if key not in used]
    if direct is not None and direct.key not in used and all(i.key != direct.key for i in items):
        items.append(direct)
    return items


#: Outcomes after which a direct item waits in the inbox (``idle``: the history had it).
_KEEP_ITEM = frozenset({"lost", "paused", "blocked"})


def _keep(rt: Runtime, run_id: str, item: Input | None) -> None:
    """Write a directly reported item to the inbox (once per key), for a later activation."""
    if item is not None:
        rt.store.workflows.put_inbox(run_id, item.key, item.to_json())


def _activate_locked(
    rt: Runtime, run_id: str, inline: InlineBudget | None = None, direct: Input | None = None
) -> str:
    wf = rt.store.workflows
    state = wf.load(run_id)
    if state is None:
        return "no-run"
    if state.run.status not in RUN_ACTIVE:
        return "finished"
    if state.run.status == RunStatus.PAUSED:
        # Nothing new starts, not even what the last commit decided: resuming dispatches it.
        return "paused"
    history = [Activation.from_json(a) for a in state.history]
    if history and state.dispatched < state.last:
        # The last activation was committed but not (fully) dispatched: do it again.
        dispatch(rt, state.run, state.gen, history[-1], history)
        wf.mark_dispatched(run_id, gen=state.gen, n=state.last)
    items = _new_items(state, direct)
    if not items:
        return "idle"
    defn = workflow_of(state.run)
    if defn is None:
        name = state.run.snapshot.get("workflow")
        report = {
            "error": f"workflow {name!r} version {state.run.version} is not registered in this "
            "process: deploy it (FLOWBRIDGE_APP) on every worker",
            "activation": state.last + 1,
        }
        return _block(rt, state, report)
    machine = Machine(defn, run_id=run_id, gen=state.gen)
    try:
        try:
            machine.replay(history)
        except NonDeterminismError as exc:
            return _block(rt, state, exc.report())
        except rt.port.timeout_errors:
            return _block(rt, state, _cpu_report(rt, state.last + 1))
        try:
            result = machine.advance(items, at=rt.clock())
        except rt.port.timeout_errors:
            return _block(rt, state, _cpu_report(rt, state.last + 1))
    finally:
        machine.teardown()
    if result.blocked is not None:
        return _block(rt, state, result.blocked)
    for warning in machine.replay_warnings:
        log.warning("run %s (replay): %s", run_id, warning)
    act = Activation(
        n=state.last + 1, at=rt.clock(), inputs=tuple(items), commands=tuple(result.commands)
    )
    act = check_limits(act, history, machine)
    crash_point("before_commit")
    # Nothing to send (the one activity runs in this task): the dispatch mark goes with the
    # commit. A crash before the activity reports is the task's redelivery's (resend_held).
    quiet = holds_all(act, inline)
    # The direct item has no inbox row to mark (the history records it all the same).
    consumed = [i.key for i in items if i is not direct]
    if not wf.commit(
        run_id, gen=state.gen, activation=act.to_json(), consumed=consumed, dispatched=quiet
    ):
        # Another activation committed first (a lock that expired): its result stands.
        return "lost"
    crash_point("after_commit")
    if state.blocked is not None:
        wf.set_blocked(run_id, None)
    for warning in result.warnings:
        log.info("run %s: %s", run_id, warning)
        rt.store.append_history(run_id, HistoryKind.RUN_WARNING, data={"message": warning})
    history.append(act)
    dispatch(rt, state.run, state.gen, act, history, inline=inline)
    crash_point("after_dispatch")
    if not quiet:
        wf.mark_dispatched(run_id, gen=state.gen, n=act.n)
    return "committed"


def _cpu_report(rt: Runtime, n: int) -> dict[str, Any]:
    return {
        "error": f"activation {n} ran longer than FLOWBRIDGE_ACTIVATION_CPU_S="
        f"{rt.settings.activation_cpu_s:g}s: workflow code must only orchestrate "
        "(move heavy work into an activity)",
        "activation": n,
    }


def _block(rt: Runtime, state: WorkflowState, report: dict[str, Any]) -> str:
    """Record why the run cannot go on; publish ``run.blocked`` the first time."""
    first = state.blocked is None or state.blocked.get("error") != report.get("error")
    rt.store.workflows.set_blocked(state.run.run_id, report)
    if first:
        log.warning("run %s is blocked: %s", state.run.run_id, report.get("error"))
        events = lifecycle_events(rt.settings, state.run.run_id, "blocked", **report)
        if events:
            rt.store.workflows.add_outbox(events)
            rt.notify_outbox()
    return "blocked"
