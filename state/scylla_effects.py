"""The Scylla store's follow-up writes: applying and repairing effects, run transitions.

A conditional write stores its follow-ups as an ``effects`` blob; this is the
code that applies them (idempotently, and again on repair) and moves a run's
status. Giving a finished run's rows the retention TTL is ``state.scylla_retention``.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

from state.constants import (
    NODE_ACTIVE,
    NODE_PENDING,
    NODE_SKIPPED,
    NODE_WAITING,
    RUN_ACTIVE,
    RUN_FAILED,
    RUN_RUNNING,
    RUN_TERMINAL,
    RUN_WAITING,
    STATUS_BUCKET_S,
)
from state.errors import StateError
from state.models import OutboxMessage
from state.scylla_core import MAX_CAS_ROUNDS
from state.scylla_driver import UNSET, Row, _Ambiguous, _ok
from state.scylla_retention import RetentionMixin
from state.scylla_rows import (
    _check_fence,
    _dumps,
    _padded,
    _pending_effects,
    _u,
    bucket_of,
    shard_of,
)
from state.scylla_schema import (
    BUCKETS_PER_DAY,
    INDEX_SHARDS,
    OUTBOX_PARTITION_S,
    OUTBOX_SETTLE_S,
    OUTBOX_SHARDS,
    TIMER_SHARDS,
    Effects,
    HistoryItem,
    IndexMove,
    encode_effects,
)

__all__ = ["RUN_CAS_ROUNDS", "EffectsMixin"]

#: Rounds of a compare-and-set on the run row (``_cas_run``) before giving up. The run row is
#: contended by design (wakes, fences, stall claims of one run), so more than MAX_CAS_ROUNDS.
RUN_CAS_ROUNDS: Final = 32


def backoff(round_: int) -> None:
    """Sleep a little, more after each lost round (jittered, so contenders spread out)."""
    time.sleep(random.uniform(0, 0.002 * 2 ** min(round_, 6)))


class EffectsMixin(RetentionMixin):
    """Follow-up writes of the conditional writes, their repair, and run transitions."""

    # --- follow-up writes -------------------------------------------------------------------
    def _outbox_writes(
        self, msgs: Iterable[OutboxMessage], ts: int
    ) -> list[tuple[str, tuple[Any, ...]]]:
        now = self._clock()
        writes: list[tuple[str, tuple[Any, ...]]] = []
        for m in msgs:
            created = m.created_at
            if created < now - OUTBOX_SETTLE_S / 2:
                # A late replay: the relay's cursor may be past that time; publish it again
                # (same id) rather than lose it.
                created, ts = now, self._now()[1]
            writes.append(
                (
                    "outbox_put",
                    (
                        int(created // OUTBOX_PARTITION_S),
                        shard_of(m.id, OUTBOX_SHARDS),
                        created,
                        m.id,
                        m.topic,
                        _u(m.key),
                        _dumps(m.value),
                        ts,
                    ),
                )
            )
        return writes

    def _history_writes(
        self, run_id: str, items: Iterable[HistoryItem], at: float, ttl: int, ts: int
    ) -> list[tuple[str, tuple[Any, ...]]]:
        return [
            (
                "history_put",
                (
                    run_id,
                    uuid.UUID(h.event_id),
                    at,
                    h.kind,
                    _u(h.node_id),
                    UNSET if h.data is None else _dumps(h.data),
                    ttl,
                    ts,
                ),
            )
            for h in items
        ]

    def _index_writes(
        self, run_id: str, move: IndexMove, ts: int
    ) -> list[tuple[str, tuple[Any, ...]]]:
        shard = shard_of(run_id, INDEX_SHARDS)
        ttl = self._ttl if move.status in RUN_TERMINAL else self._hint_ttl
        writes: list[tuple[str, tuple[Any, ...]]] = [
            ("index_put", (move.status, move.bucket, shard, run_id, ttl, ts))
        ]
        with self._ts_lock:
            first = (move.status, move.bucket) not in self._bucket_dirs
            if first:
                if len(self._bucket_dirs) > 256:
                    self._bucket_dirs = {k for k in self._bucket_dirs if k[1] >= move.bucket - 2}
                self._bucket_dirs.add((move.status, move.bucket))
        if first:
            # One directory write per (status, bucket) per process: it is the same row each time.
            day = move.bucket // BUCKETS_PER_DAY
            writes.append(("buckets_put", (move.status, day, move.bucket, ttl + STATUS_BUCKET_S)))
        old = (move.old_status, move.old_bucket)
        if old[0] is not None and old[1] is not None and old != (move.status, move.bucket):
            writes.append(("index_del", (ts, old[0], old[1], shard, run_id)))
        return writes

    def _touch_writes(self, run: Row, at: float, ts: int) -> list[tuple[str, tuple[Any, ...]]]:
        """Record progress: ``progress_at`` and the index hint's bucket."""
        new = bucket_of(at)
        writes: list[tuple[str, tuple[Any, ...]]] = [
            # Always with a TTL: a progress stamp that outlives its run would keep a ghost row.
            ("run_progress", (self._ttl, ts, at, new, run["run_id"]))
        ]
        if run.get("bucket") != new:
            move = IndexMove(
                status=run["status"],
                bucket=new,
                old_status=run["status"],
                old_bucket=run.get("bucket"),
            )
            writes += self._index_writes(run["run_id"], move, ts)
        return writes

    def _create_nodes(
        self, run_id: str, iteration: int, ids: Sequence[str], status: str, at: float, ttl: int
    ) -> None:
        """Create node records ``IF NOT EXISTS`` (who creates them does not matter)."""
        if not ids:
            return
        items = [
            ("node_create", (run_id, n, iteration, status, at, uuid.uuid4().hex, UNSET, ttl))
            for n in ids
        ]
        for (_, params), result in zip(items, self._c().run_all(items), strict=True):
            if isinstance(result, _Ambiguous):
                for _ in range(MAX_CAS_ROUNDS):
                    reread = functools.partial(
                        self._node_row, run_id, params[1], iteration, serial=True
                    )
                    if reread() is not None:
                        break
                    self._c().lwt("node_create", params, None, reread)
                else:
                    raise StateError(f"run {run_id!r}: creating node {params[1]!r} timed out")
            elif isinstance(result, Exception):
                raise result

    def _dir_writes(
        self, run_id: str, iteration: int, ids: Iterable[str], at: float, ttl: int, ts: int
    ) -> list[tuple[str, tuple[Any, ...]]]:
        return [("dir_put", (run_id, iteration, n, at, ttl, ts)) for n in dict.fromkeys(ids)]

    def _apply_node_effects(
        self, key: tuple[str, str, int], eff: Effects, op: str, run: Row | None
    ) -> None:
        """Apply a node write's effects (the live-run parts only on a live run), then mark them."""
        run_id, _, iteration = key
        live = run is not None and run["status"] in RUN_ACTIVE
        ttl = self._ttl_for(run)
        c = self._c()
        writes = self._history_writes(run_id, eff.history, eff.at, ttl, eff.ts)
        if live and run is not None:
            joins = [a[0] for a in eff.arrivals]
            fallback = [eff.fallback] if eff.fallback is not None else []
            # The directory first: every record and arrival set must be findable by retention.
            _ok(
                c.run_all(
                    self._dir_writes(
                        run_id,
                        iteration,
                        [*eff.pending, *eff.skipped, *joins, *fallback],
                        eff.at,
                        0,
                        eff.ts,
                    )
                )
            )
            writes += [
                ("arrival_put", (run_id, j, iteration, pred, outcome, 0, eff.ts))
                for j, pred, outcome in eff.arrivals
            ]
            writes += [
                ("context_put", (run_id, k, _dumps(v), eff.at, 0, eff.ts))
                for k, v in eff.context.items()
            ]
            writes += self._outbox_writes(eff.outbox, eff.ts)
            if eff.touch or eff.fallback is not None:
                writes += self._touch_writes(run, eff.at, eff.ts)
        _ok(c.run_all(writes))
        if live:
            self._create_nodes(run_id, iteration, eff.pending, NODE_PENDING, eff.at, 0)
            self._create_nodes(run_id, iteration, eff.skipped, NODE_SKIPPED, eff.at, 0)
            if eff.fallback is not None:
                self._create_nodes(run_id, iteration, [eff.fallback], NODE_PENDING, eff.at, 0)
            elif eff.fail_run is not None:
                failed, _ = self._transition(
                    run_id,
                    from_=RUN_ACTIVE,
                    to=RUN_FAILED,
                    error=eff.fail_run.error,
                    data={"error": eff.fail_run.error},
                    outbox=eff.fail_run.outbox,
                )
                if failed:
                    ttl = self._ttl  # the run's rows now expire: so does this mark
            if eff.wake_run:
                self._wake_run(run_id)
        if eff.timer is not None:
            # The fired timer's hint (best effort: a hint written by a host whose clock is ahead
            # survives this delete, and due_timers deletes it when it finds it stale).
            bucket, due_at, park_op = eff.timer
            shard = shard_of(run_id, TIMER_SHARDS)
            c.execute("timer_del", (eff.ts, bucket, shard, due_at, *key, park_op))
        # Stamped with the op's time: a late duplicate mark loses to the retention rewrite.
        c.execute("node_effects_done", (ttl, eff.ts, {op}, *key))

    def _repair_node(self, row: Row, run: Row | None = None, *, reread_run: bool = True) -> None:
        """Apply a node row's unapplied effects, if any (the repair path)."""
        eff = _pending_effects(row)
        if eff is None:
            return
        if reread_run or run is None:
            run = self._run_row(row["run_id"])
        self._apply_node_effects(
            (row["run_id"], row["node_id"], row["iteration"]), eff, row["lwt_op"], run
        )

    def _apply_run_effects(self, run_id: str, eff: Effects, op: str) -> None:
        """Apply a run write's effects, then mark them."""
        c = self._c()
        terminal = eff.index is not None and eff.index.status in RUN_TERMINAL
        ttl = self._ttl if terminal else 0
        if eff.start_nodes:
            _ok(c.run_all(self._dir_writes(run_id, 0, eff.start_nodes, eff.at, ttl, eff.ts)))
        writes = self._history_writes(run_id, eff.history, eff.at, ttl, eff.ts)
        writes += self._outbox_writes(eff.outbox, eff.ts)
        if eff.index is not None:
            writes += self._index_writes(run_id, eff.index, eff.ts)
            writes.append(("run_progress", (self._ttl, eff.ts, eff.at, eff.index.bucket, run_id)))
        _ok(c.run_all(writes))
        self._create_nodes(run_id, 0, eff.start_nodes, NODE_PENDING, eff.at, ttl)
        if eff.cancel_nodes is not None:
            self._cancel_nodes(run_id, eff.cancel_nodes, eff.at)
        if eff.finish:
            self._expire_run(run_id)
        c.execute("run_effects_done", (ttl, eff.ts, {op}, run_id))

    def _repair_run(self, row: Row) -> None:
        eff = _pending_effects(row)
        if eff is not None:
            self._apply_run_effects(row["run_id"], eff, row["lwt_op"])

    # --- transitions ------------------------------------------------------------------------
    def _transition(
        self,
        run_id: str,
        *,
        from_: Collection[str],
        to: str,
        output: Any = UNSET,
        error: Any = UNSET,
        data: Any = None,
        outbox: Sequence[OutboxMessage] = (),
        cancel_reason: str | None = None,
        before: Row | None = None,
        fence: int | None = None,
    ) -> tuple[bool, Row | None]:
        """Move the run to ``to`` if its status is in ``from_``: (applied, the row before).

        With ``fence``, only while the run's fence is not newer (``StaleFenceError``
        otherwise): the fence is part of the condition, not just checked before.
        """
        row = before if before is not None else self._run_row(run_id)
        for _ in range(MAX_CAS_ROUNDS):
            if row is None:
                return False, None
            if fence is not None:
                _check_fence(run_id, row.get("fence"), fence)
            if row["status"] not in from_:
                self._repair_run(row)
                return False, row
            at, ts = self._now()
            op = uuid.uuid4().hex
            terminal = to in RUN_TERMINAL
            eff = Effects(
                at=at,
                ts=ts,
                history=(self._event(f"run.{to}", None, data),),
                outbox=self._stamp(outbox, at),
                index=IndexMove(
                    status=to,
                    bucket=bucket_of(at),
                    old_status=row["status"],
                    old_bucket=row.get("bucket"),
                ),
                finish=terminal,
                cancel_nodes=cancel_reason,
            )
            params: tuple[Any, ...] = (
                self._ttl if terminal else 0,
                to,
                at,
                output,
                error,
                op,
                encode_effects(eff),
                run_id,
                *_padded(from_),
            )
            name = "run_transition"
            if fence is not None:
                # The fence as read (null on a row that never had one matches ``= null``).
                name, params = "run_transition_fenced", (*params, row.get("fence"))
            applied, _ = self._c().lwt(name, params, op, lambda: self._run_row(run_id, serial=True))
            if applied:
                self._apply_run_effects(run_id, eff, op)
                return True, row
            # Our read was stale or someone moved first: decide again on a linearizable read.
            row = self._run_row(run_id, serial=True)
        raise StateError(f"run {run_id!r}: status change to {to!r} lost {MAX_CAS_ROUNDS} races")

    def _cas_run(
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
        self._repair_run(row)
        op = uuid.uuid4().hex
        params = (
            self._ttl_for(row),
            status,
            eff.at if status is not UNSET else UNSET,
            fence,
            reconciled_at,
            op,
            encode_effects(eff),
            run_id,
            row["lwt_op"],
        )
        applied, _ = self._c().lwt(
            "run_cas", params, op, lambda: self._run_row(run_id, serial=True)
        )
        if applied:
            self._apply_run_effects(run_id, eff, op)
        return applied

    def _flip(self, row: Row, to: str) -> bool:
        """Move ``running`` <-> ``waiting`` by compare-and-set on ``row`` (history, index move)."""
        at, ts = self._now()
        eff = Effects(
            at=at,
            ts=ts,
            history=(self._event(f"run.{to}", None, None),),
            index=IndexMove(
                status=to,
                bucket=bucket_of(at),
                old_status=row["status"],
                old_bucket=row.get("bucket"),
            ),
        )
        return self._cas_run(row, eff, status=to)

    def _wake_run(self, run_id: str) -> None:
        """A parked node was woken: a ``waiting`` run becomes ``running``.

        A run that is not waiting still gets a new token (an LWT that changes
        nothing else): a suspend that read "nothing runs" before this wake and
        is about to move the run to ``waiting`` then fails its compare-and-set,
        reads the nodes again and sees this one.
        """
        row = self._run_row(run_id)
        for round_ in range(RUN_CAS_ROUNDS):
            if row is None or row["status"] not in RUN_ACTIVE:
                return
            if row["status"] == RUN_WAITING:
                done = self._flip(row, RUN_RUNNING)
            else:
                at, ts = self._now()
                done = self._cas_run(row, Effects(at=at, ts=ts))
            if done:
                return
            backoff(round_)
            row = self._run_row(run_id, serial=True)
        raise StateError(f"run {run_id!r}: waking it lost {RUN_CAS_ROUNDS} races")

    def _cancel_nodes(self, run_id: str, reason: str, at: float) -> None:
        """Cancel every active node record of the run (each conditionally)."""
        c = self._c()
        dirs = c.execute("dir_get", (run_id,))
        keys = [(run_id, d["node_id"], d["iteration"]) for d in dirs]
        rows = _ok(c.run_all([("node_get", k) for k in keys]))
        active = [
            k for k, r in zip(keys, rows, strict=True) if r and r[0].get("status") in NODE_ACTIVE
        ]
        # Parked nodes' timer hints can never fire now (due_timers would drop them anyway).
        ts = self._now()[1]
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
            and r[0].get("status") == NODE_WAITING
            and None not in (r[0].get("wait_bucket"), r[0].get("wait_due"), r[0].get("wait_op"))
        ]
        _ok(c.run_all(hints))
        for _ in range(MAX_CAS_ROUNDS):
            items = [
                ("node_cancel", (self._ttl, reason, at, uuid.uuid4().hex, None, *k)) for k in active
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
