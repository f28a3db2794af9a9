"""The code workflow tables on Scylla/Cassandra (``state.workflows.WorkflowStore``).

- The commit is one LWT in the partition ``(run_id, gen)``: activation ``n``
  is written with the static column ``last = n`` ``IF last = n - 1`` (``null``
  for the first), so of two activations built on the same history exactly one
  commits and no gap can arise. An ambiguous timeout is settled by reading
  the row back at SERIAL and comparing it.
- Everything else is plain writes that are idempotent: inbox items (keyed;
  what a committed activation consumed is also known from the history, so a
  ``consumed`` flag lost in a crash changes nothing), the dispatched mark and
  the blocked report (hints: a stale one only repeats an idempotent dispatch),
  timer hints (``wf_timers`` by (minute bucket, shard), listed per day in
  ``wf_timer_buckets``, as the node timers are), progress on the run.
- The generation is the one LWT column of ``wf_runs`` (``continue_as_new``
  moves it once: compare-and-set).
- A live run's rows never have a TTL (a 40-day workflow keeps its history);
  ``finish`` gives a finished run's rows the retention TTL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from state.codec import dumps, loads
from state.keys import shard_of
from state.records import RUN_ACTIVE, OutboxMessage
from state.scylla.driver import _Ambiguous, _ok
from state.scylla.rows import run_of, timer_bucket_of, timeuuid
from state.scylla.schema import TIMER_BUCKETS_PER_DAY, TIMER_SHARDS
from state.scylla.session import Session
from state.scylla.writes import Writes
from state.workflows import WorkflowState, WorkflowTimer, consumed_keys

__all__ = ["ScyllaWorkflows"]

#: TTL 0: a live run's rows never expire (Cassandra reads 0 as "no TTL").
_LIVE: Final = 0
#: Longest TTL a timer hint gets: Cassandra 4.0 refuses an expiration past 2038-01-19.
_HINT_TTL_CAP_S: Final = 5 * 365 * 86400


class ScyllaWorkflows:
    """``WorkflowStore`` on the store's session."""

    def __init__(self, session: Session, writes: Writes) -> None:
        """Use ``session``; record progress through ``writes``."""
        self.s = session
        self.w = writes

    # --- the inbox ------------------------------------------------------------------------
    def put_inbox(self, run_id: str, key: str, item: dict[str, Any]) -> bool:
        """Write an item unless its key is there (a consumed one stays, so it is refused too)."""
        c = self.s.conn()
        if c.execute("wf_inbox_has", (run_id, key)):
            return False
        _, us = self.s.now()
        c.execute("wf_inbox_put", (run_id, key, timeuuid(us), dumps(item), False, _LIVE))
        return True

    # --- reading a run --------------------------------------------------------------------
    def load(self, run_id: str) -> WorkflowState | None:
        """The run, its generation's history and its open inbox (history read at SERIAL)."""
        c = self.s.conn()
        run_rows, wf_rows, inbox_rows = _ok(
            c.run_all(
                [("run_get", (run_id,)), ("wf_run_get", (run_id,)), ("wf_inbox_get", (run_id,))]
            )
        )
        run = run_of(run_rows[0] if run_rows else None)
        if run is None:
            return None
        wf = wf_rows[0] if wf_rows else {}
        gen = int(wf.get("gen") or 0)
        # SERIAL: a commit whose Paxos round is still in flight is finished, never half-seen.
        history = tuple(
            loads(r["data"]) for r in c.execute("wf_history_get", (run_id, gen), serial=True)
        )
        used = consumed_keys(history)
        inbox = tuple(
            (r["key"], loads(r["item"]))
            for r in sorted(inbox_rows, key=lambda r: r["seq"].time)
            if not r.get("consumed") and r["key"] not in used
        )
        return WorkflowState(
            run=run,
            gen=gen,
            history=history,
            inbox=inbox,
            dispatched=int(wf.get("dispatched") or 0),
            blocked=loads(wf["blocked"]) if wf.get("blocked") else None,
        )

    # --- committing -----------------------------------------------------------------------
    def commit(
        self,
        run_id: str,
        *,
        gen: int,
        activation: dict[str, Any],
        consumed: Sequence[str],
        dispatched: bool = False,
    ) -> bool:
        """The conditional insert of activation ``n``; then its consumed keys and progress."""
        c = self.s.conn()
        run = self.s.run_row(run_id)
        if run is None or run["status"] not in RUN_ACTIVE:
            return False
        wf = c.execute("wf_run_get", (run_id,))
        wf_row = wf[0] if wf else {}
        if int(wf_row.get("gen") or 0) != gen:
            return False
        n, data = int(activation["n"]), dumps(activation)
        params = (float(activation["at"]), data, n, run_id, gen, n, n - 1 if n > 1 else None)
        result = c.run_all([("wf_history_put", params)])[0]
        if isinstance(result, _Ambiguous):
            row = c.execute("wf_history_one", (run_id, gen, n), serial=True)
            applied = bool(row) and row[0]["data"] == data
        elif isinstance(result, Exception):
            raise result
        else:
            applied = bool(result and result[0].get("[applied]"))
        if not applied:
            return False
        at, ts = self.s.now()
        follow: list[tuple[str, tuple[Any, ...]]] = [
            ("wf_inbox_consume", (_LIVE, run_id, k)) for k in consumed
        ]
        follow += self.w.touch(run, at, ts)
        if dispatched and int(wf_row.get("dispatched") or 0) < n:
            # The mark as read with the generation: it only rises (what mark_dispatched does).
            follow.append(("wf_dispatched_set", (_LIVE, n, run_id)))
        _ok(c.run_all(follow))
        return True

    def mark_dispatched(self, run_id: str, *, gen: int, n: int) -> None:
        """Raise the dispatched hint (a read, then a plain write of the higher value)."""
        c = self.s.conn()
        wf = c.execute("wf_run_get", (run_id,))
        row = wf[0] if wf else {}
        if int(row.get("gen") or 0) == gen and int(row.get("dispatched") or 0) < n:
            c.execute("wf_dispatched_set", (_LIVE, n, run_id))

    def set_blocked(self, run_id: str, report: dict[str, Any] | None) -> None:
        """Write or clear the blocked report."""
        self.s.conn().execute(
            "wf_blocked_set", (_LIVE, None if report is None else dumps(report), run_id)
        )

    # --- timers ---------------------------------------------------------------------------
    def set_timers(
        self,
        run_id: str,
        *,
        gen: int,
        put: Sequence[tuple[int, float]] = (),
        delete: Sequence[tuple[int, float]] = (),
    ) -> None:
        """Write timer hints (and their day's directory entry); delete hints."""
        if not put and not delete:
            return
        now = self.s.clock()
        shard = shard_of(run_id, TIMER_SHARDS)
        writes: list[tuple[str, tuple[Any, ...]]] = []
        for seq, due_at in put:
            # Always the due minute (a late one too): a delete then knows exactly where it is.
            bucket = timer_bucket_of(due_at)
            # A hint is never read after the index lookback past its due time: it may expire.
            # Beyond the cap (Cassandra 4.0 refuses expirations past 2038) it never does.
            ttl = int(max(due_at - now, 0) + self.s.index_lookback_s) + 86400
            ttl = ttl if ttl <= _HINT_TTL_CAP_S else _LIVE
            writes.append(("wf_timer_put", (bucket, shard, due_at, run_id, gen, seq, ttl)))
            day = bucket // TIMER_BUCKETS_PER_DAY
            writes.append(("wf_timer_buckets_put", (day, bucket, ttl)))
        for seq, due_at in delete:
            # Either bucket a put may have chosen: the due minute, or the writer's "now".
            for bucket in {
                timer_bucket_of(due_at),
                max(timer_bucket_of(due_at), timer_bucket_of(now)),
            }:
                writes.append(("wf_timer_del", (bucket, shard, due_at, run_id, gen, seq)))
        _ok(self.s.conn().run_all(writes))

    def due_timers(self, *, now: float, limit: int = 500) -> list[WorkflowTimer]:
        """Due hints from the due minute buckets, checked on their runs (active, same gen)."""
        c = self.s.conn()
        first = timer_bucket_of(now - self.s.index_lookback_s)
        last = timer_bucket_of(now)
        days = range(first // TIMER_BUCKETS_PER_DAY, last // TIMER_BUCKETS_PER_DAY + 1)
        listed = _ok(c.run_all([("wf_timer_buckets_get", (d,)) for d in days]))
        buckets = sorted(
            {r["bucket"] for rows in listed for r in rows if first <= r["bucket"] <= last}
        )
        written = timer_bucket_of(self.s.clock()) - 2  # buckets before this get no new hints
        hints: list[dict[str, Any]] = []
        for bucket in buckets:
            # Stamped before the read: a hint written after it (with its directory entry) wins
            # over this delete, so an empty-looking bucket never hides a new hint.
            read_ts = self.s.now()[1]
            shards = range(TIMER_SHARDS)
            results = _ok(c.run_all([("wf_timers_get", (bucket, s, now, limit)) for s in shards]))
            found = [h for rows in results for h in rows]
            if not found and bucket < written:
                day = bucket // TIMER_BUCKETS_PER_DAY
                c.execute("wf_timer_buckets_del", (read_ts, day, bucket))
            hints.extend(found)
            if len(hints) >= limit:
                break
        return self._checked(hints)[:limit]

    def _checked(self, hints: list[dict[str, Any]]) -> list[WorkflowTimer]:
        run_ids = list(dict.fromkeys(h["run_id"] for h in hints))
        c = self.s.conn()
        runs = _ok(c.run_all([("run_get", (i,)) for i in run_ids]))
        gens = _ok(c.run_all([("wf_run_get", (i,)) for i in run_ids]))
        live = {
            run_id: int((g[0] if g else {}).get("gen") or 0)
            for run_id, r, g in zip(run_ids, runs, gens, strict=True)
            if r and r[0].get("status") in RUN_ACTIVE
        }
        due = [
            WorkflowTimer(run_id=h["run_id"], gen=h["gen"], seq=h["seq"], due_at=h["due_at"])
            for h in hints
            if live.get(h["run_id"]) == h["gen"]
        ]
        return sorted(due, key=lambda t: (t.due_at, t.run_id, t.seq))

    # --- generations and retention ---------------------------------------------------------
    def next_generation(self, run_id: str, *, gen: int, start: dict[str, Any]) -> bool:
        """Compare-and-set the generation to ``gen + 1``; then the start item of the new one."""
        c = self.s.conn()
        c.lwt("wf_run_init", (run_id,), None, lambda: None)
        applied, _ = c.lwt("wf_gen_next", (gen + 1, run_id, gen), None, lambda: None)
        if not applied:
            return False
        c.execute("wf_dispatched_set", (_LIVE, 0, run_id))
        self.put_inbox(run_id, str(start["key"]), start)
        return True

    def add_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        """Add outbox rows by stable id (the relay publishes a re-written one again: same id)."""
        if messages:
            _ok(self.s.conn().run_all(self.w.outbox(messages, self.s.now()[1])))

    def finish(self, run_id: str, *, gen: int) -> None:
        """Give a finished run's workflow rows the retention TTL (the live ones have none).

        As for the run's own rows: the columns written by LWT are rewritten by
        LWT, the plain ones plainly, and each row marker by a key-only insert.
        """
        c = self.s.conn()
        ttl = self.s.ttl
        writes: list[tuple[str, tuple[Any, ...]]] = []
        for r in c.execute("wf_history_get", (run_id, gen)):
            n = r["n"]
            writes.append(
                ("wf_history_ttl", (ttl, loads(r["data"])["at"], r["data"], run_id, gen, n))
            )
            writes.append(("wf_history_marker", (run_id, gen, n, ttl)))
        for r in c.execute("wf_inbox_get", (run_id,)):
            writes.append(
                (
                    "wf_inbox_put",
                    (run_id, r["key"], r["seq"], r["item"], bool(r.get("consumed")), ttl),
                )
            )
        wf = c.execute("wf_run_get", (run_id,))
        if wf:
            row = wf[0]
            writes.append(
                ("wf_hints_ttl", (ttl, row.get("dispatched"), row.get("blocked"), run_id))
            )
            if row.get("gen") is not None:
                writes.append(("wf_gen_ttl", (ttl, row["gen"], run_id, row["gen"])))
                writes.append(("wf_run_marker", (run_id, ttl)))
        for result in c.run_all(writes):
            if isinstance(result, Exception) and not isinstance(result, _Ambiguous):
                raise result
