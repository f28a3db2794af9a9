"""Applying and repairing staged effects, and the conditional writes of a run's row.

A conditional write on a node or run row stores its follow-ups as ``effects``
(``state.scylla.writes`` stages them from a rule's change set); ``Applier``
applies them, idempotently, and again whenever someone finds them unapplied.
Node effects can fail or wake the run, and a run that finishes gives its rows
the retention TTL, so the run row's conditional writes live here too.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

from state.codec import dumps
from state.errors import StateError
from state.keys import shard_of
from state.records import NODE_ACTIVE, RUN_TERMINAL, NodeStatus
from state.rules import KEEP, RunChange, RunView, runs
from state.scylla.driver import UNSET, Row, _Ambiguous, _ok
from state.scylla.effects import Effects, encode_effects
from state.scylla.retention import Retention
from state.scylla.rows import padded, pending_effects, view_of
from state.scylla.schema import TIMER_SHARDS
from state.scylla.session import MAX_CAS_ROUNDS, Key, Session
from state.scylla.writes import Statement, Writes, batched

__all__ = ["RUN_CAS_ROUNDS", "Applier", "backoff"]

#: Rounds of a compare-and-set on the run row (``cas_run``) before giving up. The run row is
#: contended by design (wakes, fences, stall claims of one run), so more than MAX_CAS_ROUNDS.
RUN_CAS_ROUNDS: Final = 32

#: Decides a run change on the run as read (a rule of ``state.rules.runs``).
Decide = Callable[[RunView], RunChange]

#: Jitter source of its own: drawing from the global ``random`` would shift the sequence that
#: seeded user code (and Hypothesis' global-state check) relies on.
_JITTER: Final = random.Random()


def backoff(round_: int) -> None:
    """Sleep a little, more after each lost round (jittered, so contenders spread out)."""
    time.sleep(_JITTER.uniform(0, 0.002 * 2 ** min(round_, 6)))


def _column(value: Any, *, json: bool = False) -> Any:
    """A change's column value as bound: KEEP leaves it alone, None clears it."""
    if value is KEEP:
        return UNSET
    return dumps(value) if json and value is not None else value


class Applier:
    """Applies and repairs effects; moves, flips and wakes runs by conditional writes."""

    def __init__(self, session: Session, writes: Writes) -> None:
        """Write through ``session``; build statements with ``writes``."""
        self.s = session
        self.w = writes
        self.retention = Retention(session)

    # --- node effects ---------------------------------------------------------------------
    def create_nodes(
        self, run_id: str, iteration: int, ids: Sequence[str], status: str, at: float, ttl: int
    ) -> None:
        """Create node records that have none (who creates them does not matter)."""
        self.create_records(run_id, [(iteration, n, status) for n in ids], at, ttl)

    def create_records(
        self,
        run_id: str,
        records: Sequence[tuple[int, str, str]],
        at: float,
        ttl: int,
        beside: Sequence[Statement] = (),
    ) -> None:
        """Create records (iteration, node id, status) that have none, in one round trip.

        ``beside``: plain writes sent in the same round trip (they must not depend on it).
        """
        if not records and not beside:
            return
        items: list[Statement] = [
            ("node_create", (ttl, status, at, uuid.uuid4().hex, UNSET, run_id, n, it))
            for it, n, status in dict.fromkeys(records)
        ]
        c = self.s.conn()
        results = c.run_all([*items, *beside])
        _ok(results[len(items) :])
        for (_, params), result in zip(items, results, strict=False):
            if isinstance(result, _Ambiguous):
                node_id, it = params[6], params[7]
                for _ in range(MAX_CAS_ROUNDS):
                    reread = functools.partial(self.s.node_row, run_id, node_id, it, serial=True)
                    found = reread()
                    if found is not None and found.get("status") is not None:
                        break
                    c.lwt("node_create", params, None, reread)
                else:
                    raise StateError(f"run {run_id!r}: creating node {node_id!r} timed out")
            elif isinstance(result, Exception):
                raise result

    def apply_node(
        self, key: Key, eff: Effects, op: str, run: Row | None, *, mark: bool = True
    ) -> None:
        """Apply a node write's effects (the live-run parts only on a live run), then mark them.

        ``mark=False`` leaves them unmarked: for a claim, whose effects (its history event,
        progress) are replaced by the completion's a moment later; a reader meanwhile
        applies them again (they are idempotent) and marks them.
        """
        run_id, _, iteration = key
        # Checked again here, not only when staged: a repair may come after the run finished.
        live = run is not None and runs.live(run["status"])
        ttl = self.s.ttl_for(run)
        c = self.s.conn()
        writes = self.w.history(run_id, eff.history, eff.at, ttl, eff.ts)
        arrivals: list[Statement] = []
        if live and run is not None:
            joins = [a[0] for a in eff.arrivals]
            fallback = [eff.fallback] if eff.fallback is not None else []
            # Sent before the records and arrivals (below): every record and arrival set must
            # be findable by retention. History, context and progress need no order.
            ids = [*eff.pending, *eff.skipped, *joins, *fallback]
            writes += self.w.directory(run_id, iteration, ids, eff.at, 0, eff.ts)
            for node_id, at_iteration in eff.pending_at:
                writes += self.w.directory(run_id, at_iteration, [node_id], eff.at, 0, eff.ts)
            arrivals = [
                ("arrival_put", (run_id, j, iteration, pred, outcome, 0, eff.ts))
                for j, pred, outcome in eff.arrivals
            ]
            writes += [
                ("context_put", (run_id, k, dumps(v), eff.at, 0, eff.ts))
                for k, v in eff.context.items()
            ]
            writes += [("context_del", (eff.ts, run_id, k)) for k in eff.context_deletes]
            writes += self.w.outbox(eff.outbox, eff.ts)
            if eff.touch or eff.fallback is not None:
                writes += self.w.touch(run, eff.at, eff.ts)
        if eff.timer is not None:
            # The fired timer's hint (best effort: a hint written by a host whose clock is ahead
            # survives this delete, and due_timers deletes it when it finds it stale).
            bucket, due_at, park_op = eff.timer
            shard = shard_of(run_id, TIMER_SHARDS)
            writes.append(("timer_del", (eff.ts, bucket, shard, due_at, *key, park_op)))
        _ok(c.run_all(batched(writes)))
        if live:
            # The directory is written: the records and arrivals go together, one round trip.
            records = [(iteration, n, NodeStatus.PENDING) for n in eff.pending]
            records += [(iteration, n, NodeStatus.SKIPPED) for n in eff.skipped]
            records += [(at_it, n, NodeStatus.PENDING) for n, at_it in eff.pending_at]
            if eff.fallback is not None:  # staged by an older release (now a pending record)
                records.append((iteration, eff.fallback, NodeStatus.PENDING))
            self.create_records(run_id, records, eff.at, 0, beside=arrivals)
            if eff.fallback is None and eff.fail_run is not None:
                f = eff.fail_run
                failed, _ = self.transition(
                    run_id, lambda v: runs.fail_run(v, error=f.error, outbox=f.outbox)
                )
                if failed:
                    ttl = self.s.ttl  # the run's rows now expire: so does this mark
            if eff.wake_run:
                self.wake_run(run_id, guess=run)
        if mark and not eff.empty:  # empty effects are never pending: nothing to mark
            # Stamped with the op's time: a late duplicate mark loses to the retention rewrite.
            c.execute("node_effects_done", (ttl, eff.ts, {op}, *key))

    def repair_node(self, row: Row, run: Row | None = None, *, reread_run: bool = True) -> None:
        """Apply a node row's unapplied effects, if any (the repair path)."""
        eff = pending_effects(row)
        if eff is None:
            return
        if reread_run or run is None:
            run = self.s.run_row(row["run_id"])
        self.apply_node((row["run_id"], row["node_id"], row["iteration"]), eff, row["lwt_op"], run)

    # --- run effects ----------------------------------------------------------------------
    def apply_run(self, run_id: str, eff: Effects, op: str) -> None:
        """Apply a run write's effects, then mark them."""
        c = self.s.conn()
        if eff.revive:
            self._apply_retry(run_id, eff)
        terminal = eff.index is not None and eff.index.status in RUN_TERMINAL
        ttl = self.s.ttl if terminal else 0
        # The start nodes' directory entries go before their records (retention finds them).
        writes = self.w.directory(run_id, 0, eff.start_nodes, eff.at, ttl, eff.ts)
        writes += self.w.history(run_id, eff.history, eff.at, ttl, eff.ts)
        writes += self.w.outbox(eff.outbox, eff.ts)
        # A new run's context (its creation's effects): stamped with the creation's time.
        writes += [
            ("context_put", (run_id, k, dumps(v), eff.at, ttl, eff.ts))
            for k, v in eff.context.items()
        ]
        if eff.index is not None:
            writes += self.w.index(run_id, eff.index, eff.ts)
            writes.append(("run_progress", (self.s.ttl, eff.ts, eff.at, eff.index.bucket, run_id)))
        _ok(c.run_all(batched(writes)))
        self.create_nodes(run_id, 0, eff.start_nodes, NodeStatus.PENDING, eff.at, ttl)
        if eff.cancel_nodes is not None:
            self.cancel_nodes(run_id, eff.cancel_nodes, eff.at)
        if eff.finish:
            self.expire_run(run_id)
        if not eff.empty:  # empty effects (a wake that only changes the token) are never pending
            c.execute("run_effects_done", (ttl, eff.ts, {op}, run_id))

    def _apply_retry(self, run_id: str, eff: Effects) -> None:
        """A retry's effects: reset records, drop their arrivals, lift the TTL, create pending.

        Applied again after a crash, each part is harmless: a record is deleted only
        while its token is the one the retry read (a re-created record has another),
        the deletes are stamped with the retry's time (later writes survive them),
        and pending records are created ``IF NOT EXISTS``.
        """
        c = self.s.conn()
        for node_id, token in eff.reset:
            params = (run_id, node_id, 0, token)
            for _ in range(MAX_CAS_ROUNDS):
                result = c.run_all([("node_reset", params)])[0]
                if not isinstance(result, _Ambiguous):
                    if isinstance(result, Exception):
                        raise result
                    break
                row = self.s.node_row(run_id, node_id, 0, serial=True)
                if row is None or row.get("lwt_op") != token:
                    break
            else:
                raise StateError(f"run {run_id!r}: resetting node {node_id!r} timed out")
        deletes: list[tuple[str, tuple[Any, ...]]] = [
            ("arrival_del", (eff.ts, run_id, j, 0, p)) for j, p in eff.unarrive
        ]
        deletes += [("wait_del", (eff.ts, run_id, n, 0)) for n, _ in eff.reset]
        _ok(c.run_all(deletes))
        if eff.revive:
            revive = Retention(self.s, ttl=0)
            dirs, rows = revive.node_rows(run_id)
            revive.expire_nodes(rows)
            revive.expire_rest(run_id, dirs)
        ids = [*eff.retry_pending, *eff.skipped, *(a[0] for a in eff.arrivals)]
        if ids:
            _ok(c.run_all(self.w.directory(run_id, 0, ids, eff.at, 0, eff.ts)))
        _ok(
            c.run_all(
                [("arrival_put", (run_id, j, 0, p, o, 0, eff.ts)) for j, p, o in eff.arrivals]
            )
        )
        self.create_nodes(run_id, 0, eff.retry_pending, NodeStatus.PENDING, eff.at, 0)
        self.create_nodes(run_id, 0, eff.skipped, NodeStatus.SKIPPED, eff.at, 0)

    def repair_run(self, row: Row) -> None:
        """Apply a run row's unapplied effects, if any."""
        eff = pending_effects(row)
        if eff is not None:
            self.apply_run(row["run_id"], eff, row["lwt_op"])

    def expire_run(self, run_id: str) -> None:
        """Give every row of a finished run the retention TTL (its live rows have none)."""
        dirs, rows = self.retention.node_rows(run_id)
        for row in rows:
            self.repair_node(row)  # a finished run: only the history part applies
        self.retention.expire_nodes(rows)
        self.retention.expire_rest(run_id, dirs)

    # --- the run row's conditional writes -------------------------------------------------
    def transition(
        self, run_id: str, decide: Decide, *, before: Row | None = None
    ) -> tuple[bool, Row | None]:
        """Move the run as ``decide`` says (``IF status IN`` its condition): (applied, row before).

        A fenced change makes the fence part of the condition, not just checked before.
        """
        self.s.forget(("run", run_id))  # what this thread read of it is about to be stale
        row = before if before is not None else self.s.run_row(run_id)
        for _ in range(MAX_CAS_ROUNDS):
            view = view_of(row)
            if row is None or view is None:
                return False, None
            change = decide(view)
            if not change.applied or change.status is None:
                self.repair_run(row)
                return False, row
            at, ts = self.s.now()
            op = uuid.uuid4().hex
            eff = self.w.run_effects(change, at=at, ts=ts, row=row)
            statuses = change.condition.status_in or frozenset()
            params: tuple[Any, ...] = (
                self.s.ttl if change.terminal else 0,
                change.status,
                at,
                _column(change.output, json=True),
                _column(change.error),
                op,
                encode_effects(eff),
                run_id,
                *padded(statuses),
            )
            name = "run_transition"
            if change.condition.fence_as_read:
                # The fence as read (null on a row that never had one matches ``= null``).
                name, params = "run_transition_fenced", (*params, row.get("fence"))
            reread = functools.partial(self.s.run_row, run_id, serial=True)
            applied, _ = self.s.conn().lwt(name, params, op, reread)
            if applied:
                self.apply_run(run_id, eff, op)
                return True, row
            # Our read was stale or someone moved first: decide again on a linearizable read.
            row = reread()
        raise StateError(f"run {run_id!r}: a status change lost {MAX_CAS_ROUNDS} races")

    def cas_run(
        self,
        row: Row,
        eff: Effects,
        *,
        status: Any = UNSET,
        fence: Any = UNSET,
        reconciled_at: Any = UNSET,
    ) -> bool:
        """One compare-and-set on the run row: applies if its ``lwt_op`` is still ``row``'s.

        The caller read ``row`` and decided on it; the condition makes that decision
        hold (any conditional write in between changes the token). The row's own
        unapplied effects are applied first, since this write replaces them.
        """
        run_id = row["run_id"]
        self.s.forget(("run", run_id))  # what this thread read of it is about to be stale
        self.repair_run(row)
        op = uuid.uuid4().hex
        params = (
            self.s.ttl_for(row),
            status,
            eff.at if status is not UNSET else UNSET,
            fence,
            reconciled_at,
            op,
            encode_effects(eff),
            run_id,
            row["lwt_op"],
        )
        reread = functools.partial(self.s.run_row, run_id, serial=True)
        applied, _ = self.s.conn().lwt("run_cas", params, op, reread)
        if applied:
            self.apply_run(run_id, eff, op)
        return applied

    def flip(self, row: Row, change: RunChange) -> bool:
        """Write a run change decided on ``row`` by compare-and-set (a flip, or a new token)."""
        at, ts = self.s.now()
        eff = self.w.run_effects(change, at=at, ts=ts, row=row)
        return self.cas_run(row, eff, status=UNSET if change.status is None else change.status)

    def wake_run(self, run_id: str, *, guess: Row | None = None) -> None:
        """A parked node was woken: a ``waiting`` run becomes ``running``.

        A run that is not waiting still gets a new token (an LWT that changes
        nothing else): a suspend that read "nothing runs" before this wake and
        is about to move the run to ``waiting`` then fails its compare-and-set,
        reads the nodes again and sees this one. ``guess``: the run row as the
        caller read it a moment ago (the compare-and-set checks it; a row that says
        there is nothing to wake is read again).
        """
        row = guess if guess is not None else self.s.run_row(run_id)
        for round_ in range(RUN_CAS_ROUNDS):
            change = runs.wake_run(view_of(row))
            if (row is None or not change.applied) and guess is not None:
                guess = None
                row = self.s.run_row(run_id, serial=True)
                change = runs.wake_run(view_of(row))
            if row is None or not change.applied:
                return
            if self.flip(row, change):
                return
            backoff(round_)
            row = self.s.run_row(run_id, serial=True)
        raise StateError(f"run {run_id!r}: waking it lost {RUN_CAS_ROUNDS} races")

    def cancel_nodes(self, run_id: str, reason: str, at: float) -> None:
        """Cancel every active node record of the run (each conditionally)."""
        c = self.s.conn()
        dirs = c.execute("dir_get", (run_id,))
        keys = [(run_id, d["node_id"], d["iteration"]) for d in dirs]
        rows = _ok(c.run_all([("node_get", k) for k in keys]))
        active = [
            k for k, r in zip(keys, rows, strict=True) if r and r[0].get("status") in NODE_ACTIVE
        ]
        # Parked nodes' timer hints can never fire now (due_timers would drop them anyway).
        ts = self.s.now()[1]
        hints = [
            (
                "timer_del",
                (
                    ts,
                    r[0]["wait_bucket"],
                    shard_of(run_id, TIMER_SHARDS),
                    r[0]["wait_due"],
                    *k,
                    r[0]["wait_op"],
                ),
            )
            for k, r in zip(keys, rows, strict=True)
            if r
            and r[0].get("status") == NodeStatus.WAITING
            and None not in (r[0].get("wait_bucket"), r[0].get("wait_due"), r[0].get("wait_op"))
        ]
        _ok(c.run_all(hints))
        for _ in range(MAX_CAS_ROUNDS):
            items = [
                ("node_cancel", (self.s.ttl, reason, at, uuid.uuid4().hex, None, *k))
                for k in active
            ]
            unsure = []
            for k, result in zip(active, c.run_all(items), strict=True):
                if isinstance(result, _Ambiguous):
                    unsure.append(k)
                elif isinstance(result, Exception):
                    raise result
            if not unsure:
                return
            # Timed out: cancel again whatever a linearizable read still finds active.
            again = _ok(c.run_all([("node_get", k) for k in unsure], serial=True))
            active = [
                k
                for k, r in zip(unsure, again, strict=True)
                if r and r[0].get("status") in NODE_ACTIVE
            ]
        raise StateError(f"run {run_id!r}: cancelling its nodes timed out {MAX_CAS_ROUNDS} times")
