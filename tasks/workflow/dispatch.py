"""Carrying out a committed activation's commands, idempotently (it may run twice).

Activities go to Celery with the task id ``run:gen:seq:attempt``; timers become
rows the reconciler finds by due time (a short one also gets a wake-up call);
cancels revoke activities and delete timers; emits become outbox rows with
stable ids; a child is started (idempotent on its run id); the end finishes
the run once (a conditional write) and tells a parent run. Each step is safe
to repeat, because a crash between the commit and the dispatch mark makes the
next activation or the reconciler dispatch again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from state.records import RUN_ACTIVE, OutboxMessage, Run, RunStatus
from tasks.events import lifecycle_events
from tasks.port import ActivationTask, ActivityTask
from tasks.runtime import InlineBudget, Runtime
from tasks.workflow.api import activities
from tasks.workflow.history import Activation, Command, Input

__all__ = ["dispatch", "holds_all", "outstanding_activities", "resend_held"]

#: What a run's end records as its status.
#: ``Run.snapshot["protocol"]`` of a run started by kafka-workflow's ``new:``.
KAFKA_WORKFLOW = "kafka-workflow"

_END_STATUS = {
    "complete": RunStatus.COMPLETED,
    "fail": RunStatus.FAILED,
    "cancelled": RunStatus.CANCELLED,
}


def dispatch(
    rt: Runtime,
    run: Run,
    gen: int,
    act: Activation,
    history: Sequence[Activation],
    *,
    inline: InlineBudget | None = None,
) -> None:
    """Carry out ``act``'s commands (``history`` ends with ``act``).

    With ``inline`` and budget left, the activation's only activity, when it is a
    registered one with no queue or timeout of its own, is not sent but kept in
    ``inline.held``: the task that activated the run runs it next, without a broker
    hop. A crash before it reports leaves it outstanding: the task's redelivery sends
    it again (``resend_held``), or the reconciler does for a stalled run.
    """
    wf = rt.store.workflows
    timers_put: list[tuple[int, float]] = []
    timers_delete: list[tuple[int, float]] = []
    emits: list[OutboxMessage] = []
    by_seq = {
        c.seq: c for a in history for c in a.commands if c.seq is not None and c.type != "cancel"
    }
    end: Command | None = None
    keep = _inline_activity(act, inline)
    for cmd in act.commands:
        if cmd.type == "activity":
            task = activity_task(run.run_id, gen, cmd)
            if cmd is keep and inline is not None:
                inline.held = task
            elif task.registered or task.queue is not None or rt.port.knows_task(task.name):
                rt.port.dispatch_activity(task)
            else:
                # Sent by name, Celery would drop it as unregistered: the run would hang.
                _unknown_activity(rt, task)
        elif cmd.type == "timer":
            due = float(cmd.payload["fire_at"])
            timers_put.append((int(cmd.seq or 0), due))
        elif cmd.type == "cancel":
            _cancel(rt, run.run_id, gen, cmd, by_seq, timers_delete)
        elif cmd.type == "emit":
            emits.append(_emit(run.run_id, gen, cmd))
        elif cmd.type == "child":
            _start_child(rt, run.run_id, gen, cmd)
        elif cmd.type in ("complete", "fail", "cancelled", "continue"):
            end = cmd
    wf.set_timers(run.run_id, gen=gen, put=timers_put, delete=timers_delete)
    now = rt.clock()
    for seq, due in timers_put:
        if due - now <= rt.settings.max_delay_s:
            # A short timer also gets a wake-up call (safe: Redis will not redeliver it early).
            item = Input(key=f"t:{gen}.{seq}", type="timer", seq=seq, gen=gen).to_json()
            rt.port.dispatch_activation(
                ActivationTask(run_id=run.run_id, item=item, countdown=max(due - now, 0.0))
            )
    if emits:
        wf.add_outbox(emits)
        rt.notify_outbox()
    if end is not None:
        _end(rt, run, gen, end, history)
    else:
        _status(rt, run, history)


def holds_all(act: Activation, inline: InlineBudget | None) -> bool:
    """Whether ``dispatch`` sends nothing for ``act``: its one command is the activity kept back."""
    return len(act.commands) == 1 and _inline_activity(act, inline) is act.commands[0]


def _inline_activity(act: Activation, inline: InlineBudget | None) -> Command | None:
    """The activity command of ``act`` its activating task may run itself, if any."""
    if inline is None or inline.held is not None or not inline.allows():
        return None
    found = [c for c in act.commands if c.type == "activity"]
    if len(found) != 1:
        return None
    cmd = found[0]
    defn = activities.get(cmd.name)
    if defn is None or cmd.payload.get("queue") is not None:
        return None
    if cmd.payload.get("timeout_s", defn.timeout_s) is not None:
        return None  # a timeout is its own task's time limit
    return cmd


def resend_held(rt: Runtime, run_id: str, *, besides: tuple[int, int]) -> bool:
    """Send the activity a dead worker may have held for itself; True if one was sent.

    For a redelivered activity task (``besides``: its own gen and seq): when the run's
    last activation started exactly one activity of the kind ``dispatch`` keeps back,
    and nothing settled it, its worker may have died holding it, and no message names
    it. If it is in flight elsewhere after all, it runs again (at least once); its
    outcome counts once per seq.
    """
    state = rt.store.workflows.load(run_id)
    if state is None or state.run.status not in RUN_ACTIVE or not state.history:
        return False
    history = [Activation.from_json(a) for a in state.history]
    cmd = _inline_activity(history[-1], InlineBudget(nodes=1, deadline=float("inf")))
    if cmd is None or (state.gen, int(cmd.seq or 0)) == besides:
        return False
    if not any(c is cmd for c in outstanding_activities(history)):
        return False
    rt.port.dispatch_activity(activity_task(run_id, state.gen, cmd))
    return True


def activity_task(run_id: str, gen: int, cmd: Command, *, attempt: int = 1) -> ActivityTask:
    """The Celery task of one attempt of an activity command."""
    args, kwargs = cmd.payload.get("args") or [[], {}]
    defn = activities.get(cmd.name)
    timeout = cmd.payload.get("timeout_s", defn.timeout_s if defn is not None else None)
    return ActivityTask(
        run_id=run_id,
        gen=gen,
        seq=int(cmd.seq or 0),
        name=cmd.name,
        attempt=attempt,
        args=tuple(args),
        kwargs=dict(kwargs),
        queue=cmd.payload.get("queue"),
        timeout_s=timeout,
        registered=defn is not None,
    )


def _unknown_activity(rt: Runtime, task: ActivityTask) -> None:
    from tasks.workflow.activation import deliver

    message = (
        f"no activity {task.name!r} is registered (@activity in a FLOWBRIDGE_APP module) and "
        "no Celery task of that name is known here; a task of another Celery app needs "
        "queue= naming where its workers listen"
    )
    error = {"name": task.name, "type": "UnknownActivity", "message": message}
    key = f"r:{task.gen}.{task.seq}"
    item = Input(key=key, type="result", seq=task.seq, gen=task.gen, error=error)
    deliver(rt, task.run_id, item)


def outstanding_activities(history: Sequence[Activation]) -> list[Command]:
    """Activity commands with no recorded outcome and no cancel (what may need resending)."""
    settled = {i.seq for a in history for i in a.inputs if i.type == "result"}
    cancelled = {c.seq for a in history for c in a.commands if c.type == "cancel"}
    return [
        c
        for a in history
        for c in a.commands
        if c.type == "activity" and c.seq not in settled and c.seq not in cancelled
    ]


def _cancel(
    rt: Runtime,
    run_id: str,
    gen: int,
    cmd: Command,
    by_seq: dict[int, Command],
    timers_delete: list[tuple[int, float]],
) -> None:
    target = by_seq.get(int(cmd.seq or 0))
    if target is None:
        return
    if target.type == "timer":
        timers_delete.append((int(target.seq or 0), float(target.payload["fire_at"])))
    elif target.type == "activity":
        mode = target.payload.get("cancel", "revoke")
        if mode != "abandon":
            defn = activities.get(target.name)
            attempts = defn.retry.max_attempts if defn is not None else 1
            ids = [f"{run_id}:{gen}:{target.seq}:{a}" for a in range(1, attempts + 1)]
            rt.port.revoke(ids, terminate=mode == "terminate")
    elif target.type == "child":
        from tasks.workflow.activation import deliver

        # The child sees one CancelledError at its current await (its compensation runs).
        item = Input(key="x:cancel", type="cancel", value="its parent cancelled it")
        deliver(rt, str(target.payload["run_id"]), item)


def _emit(run_id: str, gen: int, cmd: Command) -> OutboxMessage:
    # The same id on every dispatch of this activation: consumers dedupe on flowbridge-id.
    msg_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowbridge:{run_id}:{gen}:{cmd.seq}:emit"))
    return OutboxMessage(
        id=msg_id, topic=cmd.name, key=cmd.payload.get("key"), value=cmd.payload.get("value")
    )


def _start_child(rt: Runtime, run_id: str, gen: int, cmd: Command) -> None:
    from tasks.workflow.activation import start_workflow
    from tasks.workflow.api import workflows

    child_id = str(cmd.payload["run_id"])
    defn = workflows.get(cmd.name)
    parent = {"run_id": run_id, "gen": gen, "seq": cmd.seq}
    if defn is None:
        error = {"run_id": child_id, "message": f"no workflow {cmd.name!r} is registered"}
        _tell_parent(rt, parent, error=error)
        return
    start_workflow(rt, defn, cmd.payload.get("args"), run_id=child_id, parent=parent)


def _end(rt: Runtime, run: Run, gen: int, end: Command, history: Sequence[Activation]) -> None:
    from tasks.workflow.activation import deliver

    wf = rt.store.workflows
    if end.type == "continue":
        start = Input(key=f"s:start:{gen + 1}", type="start", value=end.payload.get("input"))
        if wf.next_generation(run.run_id, gen=gen, start=start.to_json()):
            _cancel_outstanding(rt, run.run_id, gen, history)
        deliver(rt, run.run_id, start)
        return
    status = _END_STATUS[end.type]
    output = end.payload.get("output")
    error = end.payload.get("error")
    fields: dict[str, Any] = (
        {"output": output} if status == RunStatus.COMPLETED else {"error": error}
    )
    outbox = lifecycle_events(rt.settings, run.run_id, str(status), **fields)
    if run.snapshot.get("protocol") == KAFKA_WORKFLOW:
        outbox.extend(_kw_end(rt, run.run_id, gen, status, output, end.payload))
    rt.store.finish_run(run.run_id, status=status, output=output, error=error, outbox=outbox)
    rt.notify_outbox()
    _cancel_outstanding(rt, run.run_id, gen, history)
    wf.finish(run.run_id, gen=gen)
    parent = run.snapshot.get("parent")
    if isinstance(parent, dict):
        if status == RunStatus.COMPLETED:
            _tell_parent(rt, parent, value=output)
        else:
            _tell_parent(rt, parent, error={"run_id": run.run_id, "message": error or str(status)})


def _kw_end(
    rt: Runtime, run_id: str, gen: int, status: RunStatus, output: Any, end: dict[str, Any]
) -> list[OutboxMessage]:
    """kafka-workflow's answer: ``JSON(result)`` or ``JSON(String(error))``, keyed by the run."""
    settings = rt.settings
    # The relay sends values as compact JSON, JSON.stringify's form.
    if status == RunStatus.COMPLETED:
        topic, value = settings.kw_result_topic, output
    else:
        topic, value = (
            settings.kw_error_topic,
            str(end.get("message") or end.get("error") or status),
        )
    if topic is None:
        return []
    msg_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowbridge:{run_id}:{gen}:kw-end"))
    return [OutboxMessage(id=msg_id, topic=settings.topic_prefix + topic, key=run_id, value=value)]


def _cancel_outstanding(rt: Runtime, run_id: str, gen: int, history: Sequence[Activation]) -> None:
    """A finished generation's activities are revoked and its timers deleted."""
    ids = [f"{run_id}:{gen}:{c.seq}:1" for c in outstanding_activities(history)]
    if ids:
        rt.port.revoke(ids)
    fired = {i.seq for a in history for i in a.inputs if i.type == "timer"}
    cancelled = {c.seq for a in history for c in a.commands if c.type == "cancel"}
    timers = [
        (int(c.seq or 0), float(c.payload["fire_at"]))
        for a in history
        for c in a.commands
        if c.type == "timer" and c.seq not in fired and c.seq not in cancelled
    ]
    rt.store.workflows.set_timers(run_id, gen=gen, delete=timers)


def _tell_parent(
    rt: Runtime, parent: dict[str, Any], *, value: Any = None, error: Any = None
) -> None:
    from tasks.workflow.activation import deliver

    seq, gen = int(parent["seq"]), int(parent["gen"])
    item = Input(key=f"r:{gen}.{seq}", type="result", seq=seq, gen=gen, value=value, error=error)
    deliver(rt, str(parent["run_id"]), item)


def _status(rt: Runtime, run: Run, history: Sequence[Activation]) -> None:
    """``running`` while an activity or child is outstanding, else ``waiting`` (timers, events)."""
    busy = bool(outstanding_activities(history)) or _children_pending(history)
    store, run_id = rt.store, run.run_id
    # The status as this activation loaded it, under the run's lock: only an activation moves
    # a run between running and waiting (a new item only wakes it), so a run already there
    # costs no write transaction.
    if run.status == (RunStatus.RUNNING if busy else RunStatus.WAITING):
        return
    if busy:
        store.set_run_status(
            run_id, from_={RunStatus.PENDING, RunStatus.WAITING}, to=RunStatus.RUNNING
        )
    else:
        store.set_run_status(
            run_id, from_={RunStatus.PENDING, RunStatus.RUNNING}, to=RunStatus.WAITING
        )


def _children_pending(history: Sequence[Activation]) -> bool:
    settled = {i.seq for a in history for i in a.inputs if i.type == "result"}
    cancelled = {c.seq for a in history for c in a.commands if c.type == "cancel"}
    return any(
        c.type == "child" and c.seq not in settled and c.seq not in cancelled
        for a in history
        for c in a.commands
    )
