"""The rules of an operator's actions on a run: pause, resume, and retry from a node.

- ``pause``: a runnable run (pending, running, waiting) becomes ``paused``. A
  paused run is still active: a node already in flight commits as usual, but
  the engine starts no node of it until it is resumed.
- ``resume``: a paused run is ``running`` again, or ``waiting`` when every
  live node is parked.
- ``restart_rejected``: a start the bridge rejected (an unknown blueprint, bad
  input) left a failed record without a blueprint snapshot, so a waiting client
  was answered; a later start of that run id (its DLQ record replayed once the
  blueprint exists, or the client sending it again) replaces that record once.
- ``retry``: a finished run (completed, failed, cancelled) is ``running`` again
  as its next attempt. The node records the caller names are reset (deleted,
  with their waits and the arrivals they made) and the nodes it re-runs from
  are created ``pending``; every other record, and so every output before the
  retried nodes, is kept. The caller read the kept records' statuses and says
  what it read (``expect``): a record that moved since (a late completion)
  refuses the retry, and the caller decides again on what it reads now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from state.history import HistoryKind
from state.records import (
    RUN_RUNNABLE,
    RUN_TERMINAL,
    Arrival,
    NodeState,
    OutboxMessage,
    Run,
    RunStatus,
)
from state.rules import runs
from state.rules.changes import Condition, Event, RunChange, RunView, Verdict

__all__ = ["moved", "pause", "restart_rejected", "resume", "retry"]

_PAUSED = frozenset({RunStatus.PAUSED})


def pause(run: RunView | None) -> RunChange:
    """Pause a runnable run once (a second pause finds it paused and is refused)."""
    if run is None:
        return RunChange(verdict=Verdict.MISSING, run_id="")
    if run.status not in RUN_RUNNABLE:
        return RunChange(verdict=Verdict.REFUSED, run_id=run.run_id, previous=run.status)
    return RunChange(
        verdict=Verdict.APPLIED,
        run_id=run.run_id,
        previous=run.status,
        status=RunStatus.PAUSED,
        progress=True,
        condition=Condition(status_in=frozenset(RUN_RUNNABLE)),
        history=(Event(kind=HistoryKind.RUN_PAUSED, data={"was": str(run.status)}),),
    )


def resume(run: RunView | None, *, busy: bool) -> RunChange:
    """Resume a paused run once: ``running``, or ``waiting`` when no node is pending or running."""
    if run is None:
        return RunChange(verdict=Verdict.MISSING, run_id="")
    if run.status != RunStatus.PAUSED:
        return RunChange(verdict=Verdict.REFUSED, run_id=run.run_id, previous=run.status)
    to = RunStatus.RUNNING if busy else RunStatus.WAITING
    return RunChange(
        verdict=Verdict.APPLIED,
        run_id=run.run_id,
        previous=run.status,
        status=to,
        progress=True,
        condition=Condition(status_in=_PAUSED),
        history=(Event(kind=HistoryKind.RUN_RESUMED, data={"to": str(to)}),),
    )


def moved(expect: Mapping[str, str], found: Mapping[str, NodeState]) -> list[str]:
    """The kept node records whose status is not the one the caller read (absent: ``""``)."""
    return [n for n, status in expect.items() if (found[n].status if n in found else "") != status]


def retry(
    run: RunView | None,
    *,
    from_nodes: Sequence[str],
    reset: Sequence[str],
    skipped: Sequence[str] = (),
    arrivals: Sequence[Arrival] = (),
    moved_nodes: Sequence[str] = (),
) -> RunChange:
    """Start a finished run's next attempt once, re-running ``from_nodes`` (see the module doc).

    Two retries at once cannot both apply: the second finds the run running.
    """
    if run is None:
        return RunChange(verdict=Verdict.MISSING, run_id="")
    if run.status not in RUN_TERMINAL or moved_nodes:
        return RunChange(verdict=Verdict.REFUSED, run_id=run.run_id, previous=run.status)
    data = {
        "attempt": run.attempt + 1,
        "from": list(from_nodes),
        "reset": list(reset),
        "was": str(run.status),
    }
    return RunChange(
        verdict=Verdict.APPLIED,
        run_id=run.run_id,
        previous=run.status,
        status=RunStatus.RUNNING,
        output=None,
        error=None,
        progress=True,
        condition=Condition(status_in=frozenset(RUN_TERMINAL)),
        history=(Event(kind=HistoryKind.RUN_RETRIED, data=data),),
        reset_nodes=tuple(reset),
        pending_nodes=tuple(from_nodes),
        skipped_nodes=tuple(skipped),
        arrivals=tuple(arrivals),
        attempt=run.attempt + 1,
        revive=True,
    )


def restart_rejected(
    existing: Run | None,
    run: Run,
    *,
    start_nodes: Sequence[str],
    outbox: Sequence[OutboxMessage],
    now: float,
    context: Mapping[str, Any] | None = None,
) -> RunChange:
    """Replace a rejected start's record with ``run``, its start nodes and context, once."""
    if existing is None or not existing.rejected:
        return RunChange(
            verdict=Verdict.REFUSED,
            run_id=run.run_id,
            previous=None if existing is None else existing.status,
        )
    created = runs.create(
        None, run, start_nodes=start_nodes, outbox=outbox, now=now, context=context
    )
    return created._replace(
        previous=existing.status,
        condition=Condition(status_in=frozenset({RunStatus.FAILED}), as_read=True),
        history=(
            Event(
                kind=HistoryKind.RUN_CREATED,
                data={"blueprint": run.blueprint_id, "was": "rejected"},
            ),
        ),
        replace=True,
        revive=True,
    )
