"""Waiting on Scylla: parking a node, its timer and the timer index, waking it, the run's status.

A parked node's wait lives on its own node row (LWT columns, schema 2): the
event it waits for (``wait_event``), its deadline (``wait_due``), where its
timer hint is (``wait_bucket``, ``wait_op``) and what woke it (``woken``,
``woke_event``). Parking (``running`` to ``waiting``), waking (``waiting`` to
``pending``) and un-parking are compare-and-sets on the node row's last LWT
token, so of a timer and an event racing for one wait exactly one wakes it, and
the wake and "what woke it" are one write.

Timers are found through ``timers``: (minute bucket of the due time, shard)
partitions clustered by due time, listed per day in ``timer_buckets``.
``due_timers`` reads only the buckets up to now. A hint goes in
``max(bucket(due_at), bucket(now))``, so a timer already due lands in a bucket
still being read. Each park writes its own hint (keyed by ``wait_op``); a hint
is checked against the node and run rows, and deleted once it fired or went
stale.

A run moves to ``waiting`` when a node parks and no node of the run is
``pending`` or ``running``: the parking node reads the run's node directory
(``run_nodes``) and those node rows, then moves the run by compare-and-set on
the run token it read before. A wake changes that token (``_wake_run``), so a
decision made before a concurrent wake fails and is taken again.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Sequence
from typing import Any

from state.codec import loads
from state.errors import StateError
from state.keys import shard_of
from state.records import NODE_ACTIVE, RUN_ACTIVE, DueTimer, NodeStatus, OutboxMessage, Wakeup
from state.rules import runs, waits
from state.scylla.apply import RUN_CAS_ROUNDS, Applier, backoff
from state.scylla.config import _MAX_TTL_S
from state.scylla.driver import CONCURRENCY, Row, _ok
from state.scylla.effects import Effects, encode_effects
from state.scylla.rows import (
    clear,
    node_of,
    pending_effects,
    timer_bucket_of,
    unset,
    view_of,
    wait_of,
)
from state.scylla.schema import TIMER_BUCKET_S, TIMER_BUCKETS_PER_DAY, TIMER_SHARDS
from state.scylla.session import MAX_CAS_ROUNDS, Key, Session
from state.scylla.writes import Statement, Writes

__all__ = ["Waits"]


def hint_of(row: Row) -> tuple[int, float, str] | None:
    """Where the parked node's timer hint is: ``(bucket, due_at, park_op)``."""
    bucket, due, op = row.get("wait_bucket"), row.get("wait_due"), row.get("wait_op")
    return None if bucket is None or due is None or op is None else (bucket, due, op)


class Waits:
    """``fire_timer``, ``due_timers``, ``get_wakeup`` and the parking primitives."""

    def __init__(self, session: Session, writes: Writes, applier: Applier) -> None:
        """Work through ``session``; stage with ``writes``; apply with ``applier``."""
        self.s = session
        self.w = writes
        self.fx = applier

    # --- primitives -----------------------------------------------------------------------
    def node_cas(
        self, name: str, row: Row, cols: tuple[Any, ...], eff: Effects, run: Row | None
    ) -> str | None:
        """One compare-and-set on a node row (its ``lwt_op`` as read); the new token if applied."""
        key = (row["run_id"], row["node_id"], row["iteration"])
        self.fx.repair_node(row, run, reread_run=False)  # this write replaces the row's effects
        op = uuid.uuid4().hex
        params = (self.s.ttl_for(run), *cols, eff.at, op, encode_effects(eff), *key, row["lwt_op"])
        reread = functools.partial(self.s.node_row, *key, serial=True)
        applied, _ = self.s.conn().lwt(name, params, op, reread)
        if not applied:
            return None
        self.fx.apply_node(key, eff, op, run)
        return op

    def _timer_writes(
        self, key: Key, bucket: int, due_at: float, park_op: str, at: float, ts: int
    ) -> list[Statement]:
        run_id, node_id, iteration = key
        # Read until due_at + index_lookback (the reconciler's window), then useless.
        ttl = min(math.ceil(max(0.0, due_at - at) + self.s.index_lookback_s) + 86400, _MAX_TTL_S)
        shard = shard_of(run_id, TIMER_SHARDS)
        day = bucket // TIMER_BUCKETS_PER_DAY
        return [
            (
                "timer_put",
                (bucket, shard, due_at, run_id, node_id, iteration, park_op, at, ttl, ts),
            ),
            # Always written (not cached per process): a directory entry deleted as empty
            # must come back with the next hint of its bucket.
            ("timer_buckets_put", (day, bucket, min(ttl + TIMER_BUCKET_S, _MAX_TTL_S), ts)),
        ]

    def first_due(self, key: Key, row: Row, due_at: float | None) -> float | None:
        """The node's first deadline, if it has one: a re-run never pushes it later."""
        previous = row.get("wait_due")
        if previous is None:
            # Parked before, but cut short between its hint and its node write: that try's.
            rows = self.s.conn().execute("wait_get", key)
            previous = rows[0].get("due_at") if rows else None
        due = waits.first_due(previous, due_at)
        return None if due is None else float(due)

    def park(
        self, run: Row | None, row: Row, event: str | None, due_at: float | None
    ) -> str | None:
        """``running`` to ``waiting`` with the wait; the LWT token if applied, None if raced."""
        key = (row["run_id"], row["node_id"], row["iteration"])
        at, ts = self.s.now()
        node = node_of(row)
        assert node is not None
        change = waits.park(node, event=event, due_at=due_at, now=at)
        park_op = uuid.uuid4().hex
        bucket = None
        # The waits row and the timer hint first: a parked node is always findable.
        writes = [("wait_put", (*key, unset(event), unset(due_at), at, self.s.ttl_for(run), ts))]
        if due_at is not None:
            bucket = max(timer_bucket_of(due_at), timer_bucket_of(at))
            writes += self._timer_writes(key, bucket, due_at, park_op, at, ts)
        _ok(self.s.conn().run_all(writes))
        eff = self.w.node_effects(change.follow, at=at, ts=ts, iteration=key[2])
        cols = (
            clear(event, row.get("wait_event")),
            clear(due_at, row.get("wait_due")),
            clear(bucket, row.get("wait_bucket")),
            clear(park_op if due_at is not None else None, row.get("wait_op")),
            clear(None, row.get("woken")),
            clear(None, row.get("woke_event")),
        )
        return self.node_cas("node_park", row, cols, eff, run)

    def unpark(self, run: Row | None, key: Key, park_lwt_op: str) -> bool:
        """``waiting`` back to ``running``, only if nothing touched the node since it parked.

        False when something did (a wake, a cancel). A write that timed out without
        applying is not that: the node, read again, still carries the park's token.
        """
        row = {"run_id": key[0], "node_id": key[1], "iteration": key[2], "lwt_op": park_lwt_op}
        for _ in range(MAX_CAS_ROUNDS):
            at, ts = self.s.now()
            if self.node_cas("node_unpark", row, (), Effects(at=at, ts=ts), run) is not None:
                return True
            now = self.s.node_row(*key, serial=True)
            if now is None or now.get("lwt_op") != park_lwt_op:
                return False
        raise StateError(f"run {key[0]!r}: un-parking {key[1]!r} timed out {MAX_CAS_ROUNDS} times")

    # --- the run's waiting status ---------------------------------------------------------
    def run_busy(self, run_id: str) -> bool:
        """Whether a node of the run is pending or running (read from its node directory).

        A row with unapplied effects counts as busy (its successors may not be
        written yet). A directory entry without a record does not: it is an
        arrival set, or a record being created by a fire_join from outside the
        run's nodes; see docs/state.md for why that window is harmless.
        """
        dirs = self.s.conn().execute("dir_get", (run_id,))
        keys = [(run_id, d["node_id"], d["iteration"]) for d in dirs]
        for start in range(0, len(keys), CONCURRENCY):
            for row in self.s.node_rows(keys[start : start + CONCURRENCY]):
                if row is None:
                    continue
                busy = row["status"] in (NodeStatus.PENDING, NodeStatus.RUNNING)
                if busy or pending_effects(row) is not None:
                    return True
        return False

    def settle_waiting(self, run_id: str) -> None:
        """After a park: a running run whose nodes are all parked or settled is ``waiting``."""
        row = self.s.run_row(run_id)
        for round_ in range(RUN_CAS_ROUNDS):
            change = runs.settle_waiting(view_of(row), busy=lambda: self.run_busy(run_id))
            if row is None or not change.applied:
                return
            if self.fx.flip(row, change):
                return
            backoff(round_)
            row = self.s.run_row(run_id, serial=True)
        raise StateError(f"run {run_id!r}: moving it to waiting lost {RUN_CAS_ROUNDS} races")

    # --- timers ---------------------------------------------------------------------------
    def fire_timer(
        self,
        run_id: str,
        node_id: str,
        iteration: int = 0,
        *,
        now: float,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Wake a parked node whose timer is due: the node's compare-and-set, once."""
        key = (run_id, node_id, iteration)
        run, row = self.s.run_and_node(*key)
        for _ in range(MAX_CAS_ROUNDS):
            at, ts = self.s.now()
            status = None if run is None else run["status"]
            change = waits.fire_timer(
                node_of(row), wait_of(row), status, now=now, at=at, outbox=outbox
            )
            if row is None or not change.applied or change.wait is None:
                return False
            eff = self.w.node_effects(
                change.follow, at=at, ts=ts, iteration=iteration, timer=hint_of(row)
            )
            cols = (change.wait.woken, clear(None, row.get("woke_event")))
            if self.node_cas("node_wake", row, cols, eff, run) is not None:
                return True
            row = self.s.node_row(*key, serial=True)
        raise StateError(f"run {run_id!r}: firing {node_id!r}'s timer lost {MAX_CAS_ROUNDS} races")

    def due_timers(self, *, now: float, limit: int = 500) -> list[DueTimer]:
        """Due timers from the due buckets of the timer index (hints checked on their rows)."""
        c = self.s.conn()
        first = timer_bucket_of(now - self.s.index_lookback_s)
        last = timer_bucket_of(now)
        days = range(first // TIMER_BUCKETS_PER_DAY, last // TIMER_BUCKETS_PER_DAY + 1)
        listed = _ok(c.run_all([("timer_buckets_get", (d,)) for d in days]))
        buckets = sorted(
            {r["bucket"] for rows in listed for r in rows if first <= r["bucket"] <= last}
        )
        written = timer_bucket_of(self.s.clock()) - 2  # buckets before this get no new hints
        found: dict[Key, DueTimer] = {}
        for bucket in buckets:
            shards = range(TIMER_SHARDS)
            results = _ok(c.run_all([("timers_get", (bucket, s, now, limit)) for s in shards]))
            hints = [(bucket, s, h) for s, rows in zip(shards, results, strict=True) for h in rows]
            if not hints and bucket < written:
                day = bucket // TIMER_BUCKETS_PER_DAY
                c.execute("timer_buckets_del", (self.s.now()[1], day, bucket))
                continue
            for t in self._checked_timers(hints):
                found.setdefault((t.run_id, t.node_id, t.iteration), t)
            if len(found) >= limit:
                break
        return sorted(found.values(), key=lambda t: (t.due_at, t.run_id, t.node_id))[:limit]

    def _checked_timers(self, hints: list[tuple[int, int, Row]]) -> list[DueTimer]:
        """The hints whose node is parked on that very timer; stale hints are deleted."""
        keys = list(dict.fromkeys((h["run_id"], h["node_id"], h["iteration"]) for _, _, h in hints))
        nodes = dict(zip(keys, self.s.node_rows(keys), strict=True))
        run_ids = list(dict.fromkeys(k[0] for k in keys))
        run_rows = {
            run_id: rows[0] if rows and rows[0].get("status") is not None else None
            for run_id, rows in zip(
                run_ids,
                _ok(self.s.conn().run_all([("run_get", (i,)) for i in run_ids])),
                strict=True,
            )
        }
        for k, node in nodes.items():
            if node is not None and pending_effects(node) is not None:
                # A wake cut short (its outbox job, the run's status): finish it first.
                self.fx.repair_node(node, run_rows[k[0]], reread_run=False)
        due: list[DueTimer] = []
        stale: list[tuple[str, tuple[Any, ...]]] = []
        ts = self.s.now()[1]
        for bucket, shard, h in hints:
            k = (h["run_id"], h["node_id"], h["iteration"])
            verdict = _verdict(h, nodes[k], run_rows[k[0]])
            if verdict == "due":
                due.append(DueTimer(run_id=k[0], node_id=k[1], iteration=k[2], due_at=h["due_at"]))
            elif verdict == "stale":
                # At the hint's own write time or later: a writer's clock ahead of ours
                # cannot make the delete miss it (each hint is written once, by one park).
                params = (max(ts, h.get("wt") or 0), bucket, shard, h["due_at"], *k, h["park_op"])
                stale.append(("timer_del", params))
        _ok(self.s.conn().run_all(stale))
        return due

    # --- what woke a node -----------------------------------------------------------------
    def get_wakeup(self, run_id: str, node_id: str, iteration: int = 0) -> Wakeup | None:
        """What woke the node (recorded on its row by the write that woke it)."""
        wait = wait_of(self.s.node_row(run_id, node_id, iteration))
        if wait is None or wait.woken != "event" or wait.woke_event is None:
            return waits.wakeup_of(wait)
        rows = self.s.conn().execute("inbox_get", (run_id, wait.woke_event))
        return waits.wakeup_of(wait, loads(rows[0]["payload"]) if rows else None)


def _verdict(hint: Row, node: Row | None, run: Row | None) -> str:
    """``due`` (fire it), ``keep`` (a park may be in flight) or ``stale`` (delete the hint)."""
    if run is None or run["status"] not in RUN_ACTIVE:
        return "stale"
    if node is None or node["status"] not in NODE_ACTIVE:
        return "stale"
    if node.get("wait_op") != hint["park_op"]:
        # Another park's hint, or this park's node write has not landed yet.
        return "keep" if node["status"] == NodeStatus.RUNNING else "stale"
    if node.get("woken") is not None:
        return "stale"  # fired already, or woken by its event
    return "due" if node["status"] == NodeStatus.WAITING else "keep"
