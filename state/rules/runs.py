"""The rules of a run's row: creation, status changes, cancel, fences, stall claims, waking."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from state.errors import StaleFenceError
from state.history import HistoryKind, run_kind
from state.records import RUN_ACTIVE, OutboxMessage, Run, RunStatus
from state.rules.changes import ABSENT, AS_READ, KEEP, Condition, Event, RunChange, RunView, Verdict

__all__ = [
    "advance_fence",
    "cancel",
    "check_fence",
    "claim_stall",
    "create",
    "fail_run",
    "finish",
    "live",
    "settle_waiting",
    "start",
    "transition",
    "wake_run",
]


def live(status: str | None) -> bool:
    """Whether a run with ``status`` may still change (None: there is no run)."""
    return status is not None and status in RUN_ACTIVE


def check_fence(run_id: str, current: int | None, fence: int) -> None:
    """Refuse a writer whose fence is older than the run's (it lost its lock)."""
    if fence < (current or 0):
        raise StaleFenceError(
            f"run {run_id!r}: fence {fence} is older than the run's fence {current}: "
            "this writer lost its lock"
        )


def create(
    existing: Run | None,
    run: Run,
    *,
    start_nodes: Sequence[str],
    outbox: Sequence[OutboxMessage],
    now: float,
    context: Mapping[str, Any] | None = None,
) -> RunChange:
    """Create ``run`` with its start nodes and context, unless a run with its id exists.

    A cancel marker is a run too: a start after its cancel creates nothing.

    A backend that does not read first passes ``existing=None``: the condition
    (``absent``) decides.
    """
    if existing is not None:
        return RunChange(verdict=Verdict.REFUSED, run_id=run.run_id, previous=existing.status)
    history = [Event(kind=HistoryKind.RUN_CREATED, data={"blueprint": run.blueprint_id})]
    if run.terminal:
        # A run born finished (a rejected start) says why.
        history.append(Event(kind=run_kind(run.status), data={"error": run.error}))
    return RunChange(
        verdict=Verdict.APPLIED,
        run_id=run.run_id,
        status=run.status,
        record=Run(
            run_id=run.run_id,
            blueprint_id=run.blueprint_id,
            version=run.version,
            status=run.status,
            input=run.input,
            snapshot=run.snapshot,
            output=run.output,
            error=run.error,
            fence=run.fence,
            created_at=now,
            updated_at=now,
            parent=run.parent,
        ),
        progress=True,
        condition=ABSENT,
        history=tuple(history),
        outbox=tuple(outbox),
        start_nodes=tuple(start_nodes),
        context=dict(context or {}),
    )


#: The statuses a node's claim moves to ``running`` (a new run; a run whose wait ended).
STARTABLE: frozenset[str] = frozenset({RunStatus.PENDING, RunStatus.WAITING})


def start(run: RunView | None) -> RunChange:
    """A node of the run was claimed: a ``pending`` or ``waiting`` run is ``running`` now."""
    return transition(run, from_=STARTABLE, to=RunStatus.RUNNING)


def transition(
    run: RunView | None,
    *,
    from_: Collection[str],
    to: str,
    output: Any = KEEP,
    error: Any = KEEP,
    data: Any = None,
    outbox: Sequence[OutboxMessage] = (),
    fence: int | None = None,
    cancel_reason: str | None = None,
) -> RunChange:
    """Move the run to ``to`` if its status is in ``from_`` (with a ``fence``: only if current)."""
    if run is None:
        return RunChange(verdict=Verdict.MISSING, run_id="")
    if fence is not None:
        check_fence(run.run_id, run.fence, fence)
    if run.status not in from_:
        return RunChange(verdict=Verdict.REFUSED, run_id=run.run_id, previous=run.status)
    return RunChange(
        verdict=Verdict.APPLIED,
        run_id=run.run_id,
        previous=run.status,
        status=to,
        output=output,
        error=error,
        progress=True,
        condition=Condition(status_in=frozenset(from_), fence_as_read=fence is not None),
        history=(Event(kind=run_kind(to), data=data),),
        outbox=tuple(outbox),
        cancel_nodes=cancel_reason,
    )


def finish(
    run: RunView | None,
    *,
    status: str,
    output: Any = None,
    error: str | None = None,
    outbox: Sequence[OutboxMessage] = (),
) -> RunChange:
    """Move an active run to a terminal status once, with its result."""
    return transition(
        run,
        from_=RUN_ACTIVE,
        to=status,
        output=output,
        error=error,
        data={"error": error} if error else None,
        outbox=outbox,
    )


def fail_run(run: RunView | None, *, error: str, outbox: Sequence[OutboxMessage]) -> RunChange:
    """Fail an active run with a node that failed for good (its output is left alone)."""
    return transition(
        run,
        from_=RUN_ACTIVE,
        to=RunStatus.FAILED,
        error=error,
        data={"error": error},
        outbox=outbox,
    )


def cancel(
    run: RunView | None,
    *,
    run_id: str,
    reason: str,
    outbox: Sequence[OutboxMessage],
    fence: int | None,
    now: float,
) -> RunChange:
    """Cancel an active run and its active nodes; for an unknown run, leave a marker.

    The marker makes the run's start a no-op (a cancel that overtook its start).
    A finished run is left alone. A ``fence`` older than the run's raises.
    """
    if run is None:
        marker = Run(
            run_id=run_id,
            blueprint_id="",
            version="",
            status=RunStatus.CANCELLED,
            input=None,
            snapshot={},
            error=reason,
            created_at=now,
            updated_at=now,
        )
        return RunChange(
            verdict=Verdict.APPLIED,
            run_id=run_id,
            status=RunStatus.CANCELLED,
            record=marker,
            progress=True,
            condition=ABSENT,
            history=(
                Event(kind=HistoryKind.RUN_CANCELLED, data={"reason": reason, "marker": True}),
            ),
        )
    return transition(
        run,
        from_=RUN_ACTIVE,
        to=RunStatus.CANCELLED,
        error=reason,
        data={"reason": reason},
        outbox=outbox,
        fence=fence,
        cancel_reason=reason,
    )


def advance_fence(run: RunView | None) -> RunChange:
    """The run's next fence (the read one plus one); two callers never get the same one."""
    if run is None:
        return RunChange(verdict=Verdict.MISSING, run_id="")
    return RunChange(
        verdict=Verdict.APPLIED,
        run_id=run.run_id,
        previous=run.status,
        fence=run.fence + 1,
        condition=AS_READ,
    )


def claim_stall(
    run: RunView | None,
    *,
    stalled_since: float,
    fence: int,
    outbox: Sequence[OutboxMessage],
    now: float,
) -> RunChange:
    """Claim one stall of a run (no progress since ``stalled_since``) for its re-emitted jobs.

    Applies once per stall: the claim is progress, so a second reconciler that
    saw the same stall finds it moved on (or, on a store where progress is a
    plain column written after the claim, finds ``reconciled_at`` past it).
    """
    if run is None:
        return RunChange(verdict=Verdict.MISSING, run_id="")
    check_fence(run.run_id, run.fence, fence)
    if run.status not in RUN_ACTIVE:
        return RunChange(verdict=Verdict.REFUSED, run_id=run.run_id, previous=run.status)
    if run.progress_at != stalled_since or (run.reconciled_at or 0.0) > stalled_since:
        return RunChange(verdict=Verdict.REFUSED, run_id=run.run_id, previous=run.status)
    return RunChange(
        verdict=Verdict.APPLIED,
        run_id=run.run_id,
        previous=run.status,
        reconciled_at=now,
        progress=True,
        condition=AS_READ,
        history=(Event(kind=HistoryKind.RUN_RECONCILED, data={"jobs": len(outbox)}),),
        outbox=tuple(outbox),
    )


def wake_run(run: RunView | None) -> RunChange:
    """A node of the run is pending again: a ``waiting`` run is ``running``.

    An active run that is not waiting gets a change that writes nothing but is
    applied on the row as read: Scylla writes it to change the run row's token,
    so that a suspend deciding "nothing runs" at the same time decides again.
    (The node's own change records the progress.)
    """
    if run is None or run.status not in RUN_ACTIVE:
        return RunChange(
            verdict=Verdict.REFUSED, run_id="" if run is None else run.run_id, previous=None
        )
    if run.status != RunStatus.WAITING:
        return RunChange(
            verdict=Verdict.APPLIED,
            run_id=run.run_id,
            previous=run.status,
            condition=AS_READ,
        )
    return _flip(run, RunStatus.RUNNING)


def settle_waiting(run: RunView | None, *, busy: Callable[[], bool]) -> RunChange:
    """After a park: a running run none of whose nodes is pending or running is ``waiting``.

    ``busy`` is asked only about a running run (on Scylla it reads every node record).
    """
    if run is None or run.status != RunStatus.RUNNING or busy():
        return RunChange(
            verdict=Verdict.REFUSED,
            run_id="" if run is None else run.run_id,
            previous=None if run is None else run.status,
        )
    return _flip(run, RunStatus.WAITING)


def _flip(run: RunView, to: RunStatus) -> RunChange:
    """``running`` <-> ``waiting``, decided on the row as read."""
    return RunChange(
        verdict=Verdict.APPLIED,
        run_id=run.run_id,
        previous=run.status,
        status=to,
        progress=True,
        condition=AS_READ,
        history=(Event(kind=run_kind(to)),),
    )
