"""Run operations of the Scylla store: create, status changes, cancel, fences, stall claims.

The run's context and history are here too.

Every decision is an LWT on the run row: creation ``IF NOT EXISTS``, status
changes ``IF status IN`` (a fenced cancel also ``AND fence = <read>``), fences
and stall claims a compare-and-set on the row's last LWT token (``lwt_op``).

- ``fence`` is written only by LWT: ``advance_fence`` reads ``f`` and writes
  ``f + 1`` if the token is unchanged, so two callers never get the same fence.
- A stall is identified by the run's last progress as the reconciler saw it
  (``stalled_since`` = ``max(status_at, progress_at)``). ``progress_at`` is a
  plain column, so it cannot be part of an LWT condition; ``reconciled_at`` is
  an LWT column and is what the claim writes: a stall is claimed once
  ``reconciled_at > stalled_since``. The claim then records progress (a plain
  ``progress_at`` write among its effects), so the run's next stall starts
  from the claim. Between the LWT and that write, a second reconciler still
  sees the old progress, but the SERIAL read shows ``reconciled_at`` past it.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final

from state.codec import dumps, loads
from state.errors import StateError
from state.records import (
    NODE_ACTIVE,
    RUN_TERMINAL,
    Arrival,
    HistoryEvent,
    OutboxMessage,
    RetryOutcome,
    Run,
)
from state.rules import RunChange, RunView, operator, runs
from state.scylla.apply import RUN_CAS_ROUNDS, Applier, backoff
from state.scylla.driver import Row, _ok
from state.scylla.effects import Effects, HistoryItem, decode_effects, encode_effects
from state.scylla.rows import node_of, padded, pending_effects, run_of, timeuuid, unset, view_of
from state.scylla.session import MAX_CAS_ROUNDS, Session
from state.scylla.writes import Writes

__all__ = ["RUN_REPAIR_GRACE_S", "Runs"]

#: A live run's unapplied effects older than this are repaired by ``get_run`` (younger ones
#: are probably being applied right now by the writer); a finished run's always are.
RUN_REPAIR_GRACE_S: Final = 10.0


class Runs:
    """The run operations, and the run context and history."""

    def __init__(self, session: Session, writes: Writes, applier: Applier) -> None:
        """Work through ``session``; stage with ``writes``; apply with ``applier``."""
        self.s = session
        self.w = writes
        self.fx = applier

    def _create(
        self, run_id: str, change: RunChange, at: float, ts: int
    ) -> tuple[Effects, str, tuple[Any, ...]]:
        """The ``INSERT ... IF NOT EXISTS`` of a run the rule made (a new run, a cancel marker)."""
        record = change.record
        assert record is not None
        op = uuid.uuid4().hex
        eff = self.w.run_effects(change, at=at, ts=ts, row=None)
        params = (
            run_id,
            record.blueprint_id,
            record.version,
            dumps(record.input),
            dumps(record.snapshot),
            at,
            record.status,
            at,
            None if record.output is None else dumps(record.output),
            record.error,
            record.fence,
            op,
            encode_effects(eff),
            None if record.parent is None else dumps(record.parent),
            self.s.ttl if change.terminal else 0,
        )
        return eff, op, tuple(unset(p) for p in params)

    def _insert(
        self, run_id: str, eff: Effects, op: str, params: tuple[Any, ...]
    ) -> tuple[bool, Row | None]:
        reread = functools.partial(self.s.run_row, run_id, serial=True)
        applied, row = self.s.conn().lwt("run_create", params, op, reread)
        if applied:
            self.fx.apply_run(run_id, eff, op)
        return applied, row

    # --- runs -----------------------------------------------------------------------------
    def create_run(
        self,
        run: Run,
        *,
        start_nodes: Sequence[str],
        outbox: Sequence[OutboxMessage] = (),
        context: Mapping[str, Any] | None = None,
    ) -> tuple[bool, Run]:
        """Create the run, its start nodes and context if no run with that id exists.

        The creation is ``INSERT ... IF NOT EXISTS``; the start nodes and context are
        its effects (context rows stamped with its time, so a replay changes nothing).
        """
        at, ts = self.s.now()
        # Not read first: the condition (IF NOT EXISTS) decides.
        change = runs.create(
            None, run, start_nodes=start_nodes, outbox=outbox, now=at, context=context
        )
        eff, op, params = self._create(run.run_id, change, at, ts)
        for _ in range(MAX_CAS_ROUNDS):
            applied, row = self._insert(run.run_id, eff, op, params)
            if applied:
                assert change.record is not None
                return True, change.record
            # Not applied: a redelivered start, or a cancel marker that came first.
            existing = row if row is not None and row.get("status") is not None else None
            if existing is None or "effects" not in existing:
                existing = self.s.run_row(run.run_id, serial=True)
            if existing is not None:
                break
            # A timed-out write that did not happen (nothing is stored): try again.
        else:
            raise StateError(f"run {run.run_id!r}: creation timed out {MAX_CAS_ROUNDS} times")
        stored = run_of(existing)
        assert stored is not None
        self.fx.repair_run(existing)
        return False, stored

    def get_run(self, run_id: str, *, snapshot: bool = True) -> Run | None:
        """Read one run (repairing its unapplied effects if it finished, or if they are old)."""
        return self.run_from(run_id, self.s.run_row(run_id), snapshot=snapshot)

    def run_from(self, run_id: str, row: Row | None, *, snapshot: bool = True) -> Run | None:
        """``get_run`` of a run row just read."""
        if row is not None and pending_effects(row) is not None:
            status_at = row.get("status_at") or 0.0
            # A finished run's effects (its active nodes cancelled, say) are what its reader
            # looks at next, and they are idempotent: apply them now rather than show a
            # cancelled run whose nodes still wait. A live run's are left to their writer
            # for a while, who is probably applying them right now.
            if row.get("status") in RUN_TERMINAL or status_at < self.s.clock() - RUN_REPAIR_GRACE_S:
                self.fx.repair_run(row)
        if row is not None:
            # The engine claims a node of this run next: that claim need not read it again.
            self.s.remember(("run", run_id), row)
        # The column is still read; only its decoding is skipped (the hot part).
        return run_of(row, snapshot=snapshot)

    def set_run_status(self, run_id: str, *, from_: Collection[str], to: str) -> bool:
        """Move the run to ``to`` if its status is in ``from_``."""
        applied, _ = self.fx.transition(run_id, lambda v: runs.transition(v, from_=from_, to=to))
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
        applied, _ = self.fx.transition(
            run_id,
            lambda v: runs.finish(v, status=status, output=output, error=error, outbox=outbox),
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

        def decide(view: RunView | None, at: float = 0.0) -> RunChange:
            return runs.cancel(
                view, run_id=run_id, reason=reason, outbox=outbox, fence=fence, now=at
            )

        row = self.s.run_row(run_id)
        for _ in range(MAX_CAS_ROUNDS):
            at, ts = self.s.now()
            change = decide(view_of(row), at)
            if change.record is not None:
                # A cancel that overtook its start: the marker makes the start a no-op. It
                # expires with the retention, like any finished run.
                applied, _ = self._insert(run_id, *self._create(run_id, change, at, ts))
                if applied:
                    return True, None
                row = self.s.run_row(run_id, serial=True)
                continue
            if row is None or not change.applied:
                if row is not None:
                    self.fx.repair_run(row)
                return False, run_of(row)
            applied, before = self.fx.transition(run_id, decide, before=row)
            if applied:
                return True, run_of(before)
            row = self.s.run_row(run_id, serial=True)
        raise StateError(f"run {run_id!r}: cancel lost {MAX_CAS_ROUNDS} races")

    # --- an operator's actions ------------------------------------------------------------
    def pause_run(self, run_id: str) -> bool:
        """Pause a runnable run once (``IF status IN`` the runnable statuses)."""
        applied, _ = self.fx.transition(run_id, operator.pause)
        return applied

    def resume_run(self, run_id: str, *, busy: Callable[[], bool]) -> bool:
        """Resume a paused run once (``IF status = 'paused'``); ``busy`` reads its nodes."""
        applied, _ = self.fx.transition(
            run_id, lambda v: operator.resume(v, busy=v.status == "paused" and busy())
        )
        return applied

    def restart_rejected(
        self,
        run: Run,
        *,
        start_nodes: Sequence[str],
        outbox: Sequence[OutboxMessage] = (),
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """Replace a rejected start's record with ``run``, once (compare-and-set on its token)."""
        row = self.s.run_row(run.run_id, serial=True)
        at, ts = self.s.now()
        change = operator.restart_rejected(
            run_of(row), run, start_nodes=start_nodes, outbox=outbox, now=at, context=context
        )
        if row is None or not change.applied or change.record is None:
            return False
        new = change.record
        eff = dataclasses.replace(self.w.run_effects(change, at=at, ts=ts, row=row), revive=True)
        op = uuid.uuid4().hex
        params = (
            0,
            new.blueprint_id,
            new.version,
            dumps(new.input),
            dumps(new.snapshot),
            at,
            new.status,
            at,
            op,
            encode_effects(eff),
            run.run_id,
            row["lwt_op"],
        )
        reread = functools.partial(self.s.run_row, run.run_id, serial=True)
        applied, _ = self.s.conn().lwt("run_restart", params, op, reread)
        if applied:
            self.fx.apply_run(run.run_id, eff, op)
        return applied

    def retry_run(
        self,
        run_id: str,
        *,
        from_nodes: Sequence[str],
        reset: Sequence[str],
        expect: Mapping[str, str],
        skipped: Sequence[str] = (),
        arrivals: Sequence[Arrival] = (),
        outbox: Sequence[OutboxMessage] = (),
    ) -> RetryOutcome:
        """Start a finished run's next attempt once (``IF status IN`` the finished statuses).

        The kept records are read before the run row's LWT; a node of them that
        commits between that read and the LWT wrote its follow-ups for a finished
        run (only its history), so after the LWT its effects are applied again
        on the live run (each is idempotent).
        """
        c = self.s.conn()
        for round_ in range(MAX_CAS_ROUNDS):
            row = self.s.run_row(run_id, serial=True)
            view = view_of(row)
            if row is None or view is None:
                return RetryOutcome(applied=False)
            kept_keys = [(run_id, n, 0) for n in expect]
            found = {
                k[1]: rec
                for k, r in zip(kept_keys, self.s.node_rows(kept_keys), strict=True)
                if (rec := node_of(r)) is not None and rec.status
            }
            moved = operator.moved(expect, found)
            change = operator.retry(
                view,
                from_nodes=from_nodes,
                reset=reset,
                skipped=skipped,
                arrivals=arrivals,
                moved_nodes=moved,
            )
            if not change.applied or change.attempt is None:
                return RetryOutcome(
                    applied=False, attempt=view.attempt, status=view.status, moved=tuple(moved)
                )
            # At SERIAL: the token each delete is conditional on must be the current one.
            reset_rows = [
                rows[0] if rows and rows[0].get("status") is not None else None
                for rows in _ok(
                    c.run_all([("node_get", (run_id, n, 0)) for n in reset], serial=True)
                )
            ]
            tokens = tuple(
                (n, str(r["lwt_op"]))
                for n, r in zip(reset, reset_rows, strict=True)
                if r is not None and r.get("status") is not None and r.get("lwt_op")
            )
            gone = set(reset)
            unarrive: list[tuple[str, str]] = []
            for d in c.execute("dir_get", (run_id,)):
                if d["iteration"] == 0:
                    for a in c.execute("arrival_get", (run_id, d["node_id"], 0)):
                        if a["predecessor"] in gone:
                            unarrive.append((d["node_id"], a["predecessor"]))
            at, ts = self.s.now()
            change = change._replace(outbox=tuple(outbox))
            eff = dataclasses.replace(
                self.w.run_effects(change, at=at, ts=ts, row=row),
                reset=tokens,
                unarrive=tuple(unarrive),
                retry_pending=change.pending_nodes,
                skipped=change.skipped_nodes,
                arrivals=tuple((a.join_id, a.predecessor, a.outcome) for a in change.arrivals),
                revive=True,
            )
            op = uuid.uuid4().hex
            params = (
                0,
                change.status,
                at,
                change.attempt,
                op,
                encode_effects(eff),
                run_id,
                *padded(RUN_TERMINAL),
            )
            reread = functools.partial(self.s.run_row, run_id, serial=True)
            applied, _ = c.lwt("run_retry", params, op, reread)
            if applied:
                assert change.attempt is not None
                self.fx.apply_run(run_id, eff, op)
                self._catch_up(run_id, {n: s for n, s in expect.items() if s in NODE_ACTIVE})
                return RetryOutcome(applied=True, attempt=change.attempt, status=view.status)
            backoff(round_)
        raise StateError(f"run {run_id!r}: a retry lost {MAX_CAS_ROUNDS} races")

    def _catch_up(self, run_id: str, active: Mapping[str, str]) -> None:
        """Apply again, on the live run, the effects of kept nodes that settled meanwhile."""
        if not active:
            return
        keys = [(run_id, n, 0) for n in active]
        run = self.s.run_row(run_id)
        for key, row in zip(keys, self.s.node_rows(keys), strict=True):
            if row is None or row.get("status") in NODE_ACTIVE or not row.get("lwt_op"):
                continue
            eff = decode_effects(row.get("effects"))
            if eff is not None:
                self.fx.apply_node(key, eff, row["lwt_op"], run)

    # --- fences and stall claims ----------------------------------------------------------
    def advance_fence(self, run_id: str) -> int:
        """Advance the run's fence by one (compare-and-set) and return it; 0 for no run."""
        row = self.s.run_row(run_id)
        for round_ in range(RUN_CAS_ROUNDS):
            change = runs.advance_fence(view_of(row))
            if row is None or change.fence is None:
                return 0
            at, ts = self.s.now()
            if self.fx.cas_run(row, Effects(at=at, ts=ts), fence=change.fence):
                return change.fence
            backoff(round_)
            row = self.s.run_row(run_id, serial=True)
        raise StateError(f"run {run_id!r}: advancing its fence lost {RUN_CAS_ROUNDS} races")

    def mark_reconciled(
        self,
        run_id: str,
        *,
        stalled_since: float,
        fence: int,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Claim one stall of the run with the jobs it re-emits, once (see the module doc)."""
        row = self.s.run_row(run_id, serial=True)
        for round_ in range(RUN_CAS_ROUNDS):
            at, ts = self.s.now()
            change = runs.claim_stall(
                view_of(row), stalled_since=stalled_since, fence=fence, outbox=outbox, now=at
            )
            if row is None or not change.applied:
                return False
            # The claim is progress: progress_at and the index hint move to now.
            eff = self.w.run_effects(change, at=at, ts=ts, row=row)
            if self.fx.cas_run(row, eff, reconciled_at=at):
                return True
            backoff(round_)
            row = self.s.run_row(run_id, serial=True)
        raise StateError(f"run {run_id!r}: claiming its stall lost {RUN_CAS_ROUNDS} races")

    # --- batches --------------------------------------------------------------------------
    def put_batch(self, run_id: str, batch: str, pages: Mapping[int, Sequence[Any]]) -> None:
        """Upsert pages of a batch in the run's partition (with the run's TTL if finished)."""
        ttl = self.s.ttl_for(self.s.run_row(run_id))
        items = [("batch_put", (run_id, batch, n, dumps(list(v)), ttl)) for n, v in pages.items()]
        _ok(self.s.conn().run_all(items))

    def get_batch(self, run_id: str, batch: str, pages: Sequence[int]) -> dict[int, list[Any]]:
        """Read pages of a batch (one single-row read each, concurrently)."""
        wanted = list(dict.fromkeys(pages))
        results = _ok(self.s.conn().run_all([("batch_get", (run_id, batch, n)) for n in wanted]))
        return {rows[0]["page"]: loads(rows[0]["items"]) for rows in results if rows}

    # --- context and history --------------------------------------------------------------
    def get_context(self, run_id: str) -> dict[str, Any]:
        """Read the run context (one partition, one row per key)."""
        rows = self.s.conn().execute("context_get", (run_id,))
        return {r["key"]: loads(r["value"]) for r in rows}

    def append_history(
        self, run_id: str, kind: str, *, node_id: str | None = None, data: Any = None
    ) -> None:
        """Append one history event (with the run's TTL if it has finished)."""
        run = self.s.run_row(run_id)
        at, ts = self.s.now()
        item = HistoryItem(event_id=str(timeuuid(ts)), kind=kind, node_id=node_id, data=data)
        _ok(self.s.conn().run_all(self.w.history(run_id, [item], at, self.s.ttl_for(run), ts)))

    def get_history(self, run_id: str) -> list[HistoryEvent]:
        """Read the history in commit order (clustered by a time-based id)."""
        rows = self.s.conn().execute("history_get", (run_id,))
        return [
            HistoryEvent(
                run_id=run_id,
                seq=i,
                at=r["at"],
                kind=r["kind"],
                node_id=r["node_id"],
                data=loads(r["data"]),
            )
            for i, r in enumerate(rows, start=1)
        ]
