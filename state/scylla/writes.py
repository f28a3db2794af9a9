"""What the Scylla store's follow-ups write: change sets staged as ``Effects``, and statements.

A rule's change set becomes the ``effects`` blob of its conditional write;
applying the blob runs the plain statements built here (outbox, history,
status index, progress, directory).

Every statement here is idempotent (upserts stamped ``USING TIMESTAMP`` of the
conditional write that staged them, outbox rows by stable id, history by a
time-based id fixed in the blob), so applying effects twice is applying them once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

from state.codec import dump_headers, dumps
from state.constants import STATUS_BUCKET_S
from state.keys import bucket_of, shard_of
from state.records import RUN_TERMINAL, OutboxMessage
from state.rules import FollowUps, RunChange
from state.scylla.driver import BATCH, UNSET, Row
from state.scylla.effects import Effects, FailRun, HistoryItem, IndexMove
from state.scylla.rows import unset
from state.scylla.schema import (
    BUCKETS_PER_DAY,
    INDEX_SHARDS,
    OUTBOX_PARTITION_S,
    OUTBOX_SETTLE_S,
    OUTBOX_SHARDS,
)
from state.scylla.session import Session

__all__ = ["RUN_PARTITION", "Statement", "Writes", "batched"]

#: A prepared statement's name and its parameters.
Statement = tuple[str, tuple[Any, ...]]

#: Statements on the run's own partition key (``run_id``, in any table): a Cassandra or Scylla
#: mutation is per partition key, so a batch of them is one write on each replica.
RUN_PARTITION: Final = frozenset(
    {
        "dir_put",
        "history_put",
        "context_put",
        "context_del",
        "run_progress",
        "wait_put",
        "batch_rewrite",
    }
)
#: About the most a batch carries (bytes of its values): Scylla warns at 128 KB, fails at 1 MB.
BATCH_MAX_BYTES: Final = 32_000


def _size(params: Sequence[Any]) -> int:
    return sum(len(v) if isinstance(v, str | bytes) else 16 for v in params)


def batched(statements: Sequence[Statement]) -> list[Statement]:
    """One run's ``statements``, those on its own partition as one unlogged batch (or a few).

    The batch is one round trip instead of one each. The other statements (other
    partitions: arrivals, outbox, index) stay separate, sent concurrently beside it.
    """
    out: list[Statement] = []
    batch: list[Statement] = []
    size = 0
    for st in statements:
        if st[0] not in RUN_PARTITION:
            out.append(st)
            continue
        n = _size(st[1])
        if batch and size + n > BATCH_MAX_BYTES:
            out.append((BATCH, tuple(batch)) if len(batch) > 1 else batch[0])
            batch, size = [], 0
        batch.append(st)
        size += n
    if batch:
        out.append((BATCH, tuple(batch)) if len(batch) > 1 else batch[0])
    return out


class Writes:
    """Stages change sets as effects and builds the statements that apply them."""

    def __init__(self, session: Session) -> None:
        """Stamp and cache through ``session``."""
        self.s = session

    # --- staging a rule's change set ------------------------------------------------------
    def node_effects(
        self,
        follow: FollowUps,
        *,
        at: float,
        ts: int,
        iteration: int,
        timer: tuple[int, float, str] | None = None,
    ) -> Effects:
        """A node change's follow-ups as stored effects (``timer``: the hint a wake deletes).

        ``end_wait`` needs no write here: a wait lives on its node row, so the node's
        status change ends it (its timer hint is dropped when found stale).
        """
        s = self.s
        fail = follow.fail_run
        return Effects(
            at=at,
            ts=ts,
            iteration=iteration,
            history=s.items(follow.history),
            outbox=s.stamp(follow.outbox, at),
            touch=follow.touch,
            pending=follow.pending,
            skipped=follow.skipped,
            arrivals=tuple((a.join_id, a.predecessor, a.outcome) for a in follow.arrivals),
            context=dict(follow.context),
            context_deletes=follow.context_deletes,
            pending_at=follow.pending_at,
            fail_run=None
            if fail is None
            else FailRun(error=fail.error, outbox=s.stamp(fail.outbox, at)),
            wake_run=follow.wake_run,
            timer=timer,
        )

    def run_effects(self, change: RunChange, *, at: float, ts: int, row: Row | None) -> Effects:
        """A run change's follow-ups as stored effects (``row``: the run row it was decided on).

        A status change or progress moves the run's index hint; a finish gives all its
        rows the retention TTL (a run created finished gets it with its creation).
        """
        index = None
        status = change.status if change.status is not None else change.previous
        if status is not None and (change.status is not None or change.progress):
            index = IndexMove(
                status=status,
                bucket=bucket_of(at),
                old_status=None if row is None else row["status"],
                old_bucket=None if row is None else row.get("bucket"),
            )
        return Effects(
            at=at,
            ts=ts,
            history=self.s.items(change.history),
            outbox=self.s.stamp(change.outbox, at),
            start_nodes=change.start_nodes,
            context=dict(change.context),
            index=index,
            finish=change.terminal and change.record is None,
            cancel_nodes=change.cancel_nodes,
        )

    # --- the statements effects run -------------------------------------------------------
    def outbox(self, msgs: Iterable[OutboxMessage], ts: int) -> list[Statement]:
        """Outbox rows in their (hour, shard) partitions."""
        now = self.s.clock()
        writes: list[Statement] = []
        for m in msgs:
            created = m.created_at
            if created < now - OUTBOX_SETTLE_S / 2:
                # A late replay: the relay's cursor may be past that time; publish it again
                # (same id) rather than lose it.
                created, ts = now, self.s.now()[1]
            hour = int(created // OUTBOX_PARTITION_S)
            shard = shard_of(m.id, OUTBOX_SHARDS)
            headers = unset(dump_headers(m.headers))
            row = (hour, shard, created, m.id, m.topic, unset(m.key), dumps(m.value), headers, ts)
            writes.append(("outbox_put", row))
        return writes

    def history(
        self, run_id: str, items: Iterable[HistoryItem], at: float, ttl: int, ts: int
    ) -> list[Statement]:
        """History rows, each under its staged time-based id (a replay is an upsert)."""
        return [
            (
                "history_put",
                (
                    run_id,
                    uuid.UUID(h.event_id),
                    at,
                    h.kind,
                    unset(h.node_id),
                    UNSET if h.data is None else dumps(h.data),
                    ttl,
                    ts,
                ),
            )
            for h in items
        ]

    def index(self, run_id: str, move: IndexMove, ts: int) -> list[Statement]:
        """Move a run's status-index hint (and list its bucket in the day's directory)."""
        s = self.s
        shard = shard_of(run_id, INDEX_SHARDS)
        ttl = s.ttl if move.status in RUN_TERMINAL else s.hint_ttl
        writes: list[Statement] = [
            ("index_put", (move.status, move.bucket, shard, run_id, ttl, ts))
        ]
        with s.ts_lock:
            first = (move.status, move.bucket) not in s.bucket_dirs
            if first:
                if len(s.bucket_dirs) > 256:
                    s.bucket_dirs = {k for k in s.bucket_dirs if k[1] >= move.bucket - 2}
                s.bucket_dirs.add((move.status, move.bucket))
        if first:
            # One directory write per (status, bucket) per process: it is the same row each time.
            day = move.bucket // BUCKETS_PER_DAY
            writes.append(("buckets_put", (move.status, day, move.bucket, ttl + STATUS_BUCKET_S)))
        old = (move.old_status, move.old_bucket)
        if old[0] is not None and old[1] is not None and old != (move.status, move.bucket):
            writes.append(("index_del", (ts, old[0], old[1], shard, run_id)))
        return writes

    def touch(self, run: Row, at: float, ts: int) -> list[Statement]:
        """Record progress: ``progress_at`` and the index hint's bucket."""
        new = bucket_of(at)
        writes: list[Statement] = [
            # Always with a TTL: a progress stamp that outlives its run would keep a ghost row.
            ("run_progress", (self.s.ttl, ts, at, new, run["run_id"]))
        ]
        if run.get("bucket") != new:
            move = IndexMove(
                status=run["status"],
                bucket=new,
                old_status=run["status"],
                old_bucket=run.get("bucket"),
            )
            writes += self.index(run["run_id"], move, ts)
        return writes

    @staticmethod
    def directory(
        run_id: str, iteration: int, ids: Iterable[str], at: float, ttl: int, ts: int
    ) -> list[Statement]:
        """Directory entries of node records and arrival sets (what retention visits)."""
        return [("dir_put", (run_id, iteration, n, at, ttl, ts)) for n in dict.fromkeys(ids)]
