"""Reads of the Scylla store's status index: stalled runs and recent runs, in bounded reads."""

from __future__ import annotations

from typing import Any, Final

from state.constants import STATUS_BUCKET_S
from state.keys import bucket_of, shard_of
from state.records import Run, RunStatus
from state.scylla.driver import Row, _ok
from state.scylla.rows import progress_of, run_of
from state.scylla.schema import BUCKETS_PER_DAY, INDEX_SHARDS
from state.scylla.session import Session

__all__ = ["RUN_STATUSES", "Index"]

#: All run statuses in lifecycle order (``list_runs()`` without a status reads each one's buckets).
RUN_STATUSES: Final = tuple(RunStatus)


class Index:
    """``find_stalled`` and ``list_runs``: (status, bucket) hints, each checked on its run."""

    def __init__(self, session: Session) -> None:
        """Read through ``session``."""
        self.s = session

    # --- the status index -----------------------------------------------------------------
    def _buckets(self, status: str, first: int, last: int) -> list[int]:
        """Non-empty buckets of ``status`` in [first, last], oldest first (day partitions)."""
        days = list(range(first // BUCKETS_PER_DAY, last // BUCKETS_PER_DAY + 1))
        results = _ok(self.s.conn().run_all([("buckets_get", (status, d)) for d in days]))
        return sorted(
            {r["bucket"] for rows in results for r in rows if first <= r["bucket"] <= last}
        )

    def _hints(self, status: str, bucket: int) -> list[str]:
        """Run ids hinted in one (status, bucket): its shards, concurrently."""
        results = _ok(
            self.s.conn().run_all([("index_get", (status, bucket, s)) for s in range(INDEX_SHARDS)])
        )
        ids = [r["run_id"] for rows in results for r in rows]
        if not ids and bucket < bucket_of(self.s.clock()) - 2:
            # Empty and no longer written (writers use the current bucket): forget it.
            day = bucket // BUCKETS_PER_DAY
            self.s.conn().execute("buckets_del", (self.s.now()[1], status, day, bucket))
        return ids

    def _checked(self, status: str, bucket: int, ids: list[str]) -> list[Row]:
        """The runs whose row confirms the hint; stale old hints are deleted."""
        results = _ok(self.s.conn().run_all([("run_get", (i,)) for i in ids]))
        old = bucket < bucket_of(self.s.clock()) - 2
        out: list[Row] = []
        stale: list[tuple[str, tuple[Any, ...]]] = []
        for run_id, rows in zip(ids, results, strict=True):
            row = rows[0] if rows and rows[0].get("status") is not None else None
            moved = row is not None and row.get("bucket") not in (None, bucket)
            if row is None or row["status"] != status or moved:
                if old:
                    stale.append(
                        (
                            "index_del",
                            (
                                self.s.now()[1],
                                status,
                                bucket,
                                shard_of(run_id, INDEX_SHARDS),
                                run_id,
                            ),
                        )
                    )
                continue
            out.append(row)
        _ok(self.s.conn().run_all(stale))
        return out

    def find_stalled(self, *, status: str, older_than: float, limit: int = 100) -> list[str]:
        """Run ids in ``status`` without progress since ``older_than`` (bounded index reads)."""
        first = bucket_of(self.s.clock() - self.s.index_lookback_s)
        out: list[str] = []
        for bucket in self._buckets(status, first, bucket_of(older_than)):
            for row in self._checked(status, bucket, self._hints(status, bucket)):
                updated = progress_of(row)
                if updated < older_than and row["run_id"] not in out:
                    out.append(row["run_id"])
                    if len(out) >= limit:
                        return out
        return out

    def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[Run]:
        """Recent runs newest first, through the status index (at most ``index_lookback_s``)."""
        if limit <= 0:
            return []
        statuses = RUN_STATUSES if status is None else (status,)
        now_b = bucket_of(self.s.clock())
        first = bucket_of(self.s.clock() - self.s.index_lookback_s)
        found: dict[str, tuple[int, Row]] = {}
        day = now_b // BUCKETS_PER_DAY
        while day >= first // BUCKETS_PER_DAY:
            # One day at a time, newest first: usually the first day has enough.
            lo, hi = max(first, day * BUCKETS_PER_DAY), min(now_b, (day + 1) * BUCKETS_PER_DAY - 1)
            by_bucket: dict[int, list[str]] = {}
            for st in statuses:
                for b in self._buckets(st, lo, hi):
                    by_bucket.setdefault(b, []).append(st)
            for bucket in sorted(by_bucket, reverse=True):
                for st in by_bucket[bucket]:
                    for row in self._checked(st, bucket, self._hints(st, bucket)):
                        found.setdefault(row["run_id"], (bucket, row))
                # Only after the whole bucket: its runs of every status are equally recent.
                if self._listed_enough(found, status, limit, bucket):
                    return self._listed(found, status, limit)
            day -= 1
        return self._listed(found, status, limit)

    @staticmethod
    def _listed_enough(
        found: dict[str, tuple[int, Row]], status: str | None, limit: int, bucket: int
    ) -> bool:
        if len(found) < limit:
            return False
        if status is not None:
            return True  # ordered by bucket: older buckets can only come after
        # Ordered by creation: a run in an older bucket was created before that bucket began.
        created = sorted((r.get("created_at") or 0.0 for _, r in found.values()), reverse=True)
        return created[limit - 1] >= bucket * STATUS_BUCKET_S

    @staticmethod
    def _listed(found: dict[str, tuple[int, Row]], status: str | None, limit: int) -> list[Run]:
        rows = list(found.values())
        if status is None:
            rows.sort(key=lambda br: br[1].get("created_at") or 0.0, reverse=True)
        else:
            rows.sort(
                key=lambda br: (
                    br[0],
                    progress_of(br[1]),
                ),
                reverse=True,
            )
        return [r for _, row in rows[:limit] if (r := run_of(row)) is not None]
