"""Run operations of the Scylla store: create, read, status changes, cancel; context, history."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any, Final

from state.constants import RUN_ACTIVE, RUN_CANCELLED, RUN_TERMINAL
from state.errors import StateError
from state.models import HistoryEvent, OutboxMessage, Run
from state.scylla_core import MAX_CAS_ROUNDS
from state.scylla_driver import UNSET, _ok
from state.scylla_effects import EffectsMixin
from state.scylla_rows import (
    _check_fence,
    _dumps,
    _loads,
    _pending_effects,
    _run_from,
    _u,
    bucket_of,
    timeuuid,
)
from state.scylla_schema import Effects, HistoryItem, IndexMove, encode_effects

__all__ = ["RUN_REPAIR_GRACE_S", "RunsMixin"]

#: A run's unapplied effects older than this are repaired by ``get_run`` (younger ones are
#: probably being applied right now by the writer).
RUN_REPAIR_GRACE_S: Final = 10.0


class RunsMixin(EffectsMixin):
    """The ``StateStore`` run operations, and the run context and history."""

    # --- runs -------------------------------------------------------------------------------
    def create_run(
        self, run: Run, *, start_nodes: Sequence[str], outbox: Sequence[OutboxMessage] = ()
    ) -> tuple[bool, Run]:
        """Create the run and its start nodes if no run with that id exists."""
        at, ts = self._now()
        op = uuid.uuid4().hex
        terminal = run.status in RUN_TERMINAL
        history = [self._event("run.created", None, {"blueprint": run.blueprint_id})]
        if terminal:
            history.append(self._event(f"run.{run.status}", None, {"error": run.error}))
        eff = Effects(
            at=at,
            ts=ts,
            history=tuple(history),
            outbox=self._stamp(outbox, at),
            start_nodes=tuple(start_nodes),
            index=IndexMove(status=run.status, bucket=bucket_of(at)),
        )
        params = (
            run.run_id,
            run.blueprint_id,
            run.version,
            _dumps(run.input),
            _dumps(run.snapshot),
            at,
            run.status,
            at,
            None if run.output is None else _dumps(run.output),
            run.error,
            run.fence,
            op,
            encode_effects(eff),
            self._ttl if terminal else 0,
        )
        for _ in range(MAX_CAS_ROUNDS):
            applied, row = self._c().lwt(
                "run_create",
                tuple(_u(p) for p in params),
                op,
                lambda: self._run_row(run.run_id, serial=True),
            )
            if applied:
                self._apply_run_effects(run.run_id, eff, op)
                return True, replace(run, created_at=at, updated_at=at)
            # Not applied: a redelivered start, or a cancel marker that came first.
            existing = row if row is not None and row.get("status") is not None else None
            if existing is None or "effects" not in existing:
                existing = self._run_row(run.run_id, serial=True)
            if existing is not None:
                break
            # A timed-out write that did not happen (nothing is stored): try again.
        else:
            raise StateError(f"run {run.run_id!r}: creation timed out {MAX_CAS_ROUNDS} times")
        stored = _run_from(existing)
        assert stored is not None
        self._repair_run(existing)
        return False, stored

    def get_run(self, run_id: str, *, snapshot: bool = True) -> Run | None:
        """Read one run (repairing its unapplied effects if they are old)."""
        row = self._run_row(run_id)
        if row is not None and _pending_effects(row) is not None:
            status_at = row.get("status_at") or 0.0
            if status_at < self._clock() - RUN_REPAIR_GRACE_S:
                self._repair_run(row)
        # The column is still read; only its decoding is skipped (the hot part).
        return _run_from(row, snapshot=snapshot)

    def set_run_status(self, run_id: str, *, from_: Collection[str], to: str) -> bool:
        """Move the run to ``to`` if its status is in ``from_``."""
        applied, _ = self._transition(run_id, from_=from_, to=to)
        return applied

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        output: Any = None,
        error: str | None = None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Move an active run to a terminal status once."""
        applied, _ = self._transition(
            run_id,
            from_=RUN_ACTIVE,
            to=status,
            output=None if output is None else _dumps(output),
            error=error,
            data={"error": error} if error else None,
            outbox=outbox,
        )
        return applied

    def cancel_run(
        self,
        run_id: str,
        *,
        reason: str,
        outbox: Sequence[OutboxMessage] = (),
        fence: int | None = None,
    ) -> tuple[bool, Run | None]:
        """Cancel an active run, its active nodes and timers, or leave a marker for its start.

        Cancelling a node also ends its wait: its timer hint is dropped, and an
        event for the run now finds it finished. With ``fence``, the fence is part
        of the conditional write (``StaleFenceError`` for an older one).
        """
        row = self._run_row(run_id)
        for _ in range(MAX_CAS_ROUNDS):
            if row is None:
                # A cancel that overtook its start: the marker makes the start a no-op. It
                # expires with the retention, like any finished run.
                at, ts = self._now()
                op = uuid.uuid4().hex
                eff = Effects(
                    at=at,
                    ts=ts,
                    history=(
                        self._event("run.cancelled", None, {"reason": reason, "marker": True}),
                    ),
                    index=IndexMove(status=RUN_CANCELLED, bucket=bucket_of(at)),
                )
                params = (
                    run_id,
                    "",
                    "",
                    "null",
                    "{}",
                    at,
                    RUN_CANCELLED,
                    at,
                    UNSET,
                    reason,
                    0,
                    op,
                    encode_effects(eff),
                    self._ttl,
                )
                applied, _ = self._c().lwt(
                    "run_create", params, op, lambda: self._run_row(run_id, serial=True)
                )
                if applied:
                    self._apply_run_effects(run_id, eff, op)
                    return True, None
                row = self._run_row(run_id, serial=True)
                continue
            if fence is not None:
                _check_fence(run_id, row.get("fence"), fence)
            if row["status"] not in RUN_ACTIVE:
                self._repair_run(row)
                return False, _run_from(row)
            applied, before = self._transition(
                run_id,
                from_=RUN_ACTIVE,
                to=RUN_CANCELLED,
                error=reason,
                data={"reason": reason},
                outbox=outbox,
                cancel_reason=reason,
                before=row,
                fence=fence,
            )
            if applied:
                return True, _run_from(before)
            row = self._run_row(run_id, serial=True)
        raise StateError(f"run {run_id!r}: cancel lost {MAX_CAS_ROUNDS} races")

    # --- context and history --------------------------------------------------------------
    def get_context(self, run_id: str) -> dict[str, Any]:
        """Read the run context (one partition, one row per key)."""
        rows = self._c().execute("context_get", (run_id,))
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def append_history(
        self, run_id: str, kind: str, *, node_id: str | None = None, data: Any = None
    ) -> None:
        """Append one history event (with the run's TTL if it has finished)."""
        run = self._run_row(run_id)
        at, ts = self._now()
        item = HistoryItem(event_id=str(timeuuid(ts)), kind=kind, node_id=node_id, data=data)
        _ok(self._c().run_all(self._history_writes(run_id, [item], at, self._ttl_for(run), ts)))

    def get_history(self, run_id: str) -> list[HistoryEvent]:
        """Read the history in commit order (clustered by a time-based id)."""
        rows = self._c().execute("history_get", (run_id,))
        return [
            HistoryEvent(
                run_id=run_id,
                seq=i,
                at=r["at"],
                kind=r["kind"],
                node_id=r["node_id"],
                data=_loads(r["data"]),
            )
            for i, r in enumerate(rows, start=1)
        ]
