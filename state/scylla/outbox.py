"""The Scylla store's outbox relay side: pending rows by shard cursor, and their deletion."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from state.codec import load_headers
from state.errors import SchemaError
from state.keys import shard_of
from state.records import OutboxMessage
from state.scylla.driver import Row, _ok
from state.scylla.schema import OUTBOX_PARTITION_S, OUTBOX_SETTLE_S, OUTBOX_SHARDS
from state.scylla.session import Session

__all__ = ["Outbox"]


class Outbox:
    """``pending_outbox`` and ``delete_outbox`` (the relay's reads and deletes)."""

    def __init__(self, session: Session) -> None:
        """Read and delete through ``session`` (it keeps where this process saw each row)."""
        self.s = session

    # --- outbox -----------------------------------------------------------------------------
    def _cursors(self) -> dict[int, float]:
        c = self.s.conn()
        if self.s.outbox_origin is None:
            rows = c.execute("version_get", ())
            if not rows:
                raise SchemaError(
                    f"Scylla store {self.s.config.redacted_url()} has no schema: "
                    "run `flowbridge migrate`"
                )
            self.s.outbox_origin = float(rows[0]["created_at"] or 0.0) - OUTBOX_SETTLE_S
        lows = {s: self.s.outbox_origin for s in range(OUTBOX_SHARDS)}
        for r in c.execute("cursor_get", ()):
            if r["shard"] in lows and r["low"] is not None:
                lows[r["shard"]] = max(lows[r["shard"]], r["low"])
        return lows

    def _read_outbox(
        self, shards: Iterable[int], lows: Mapping[int, float], limit: int
    ) -> dict[int, list[Row]]:
        """Each shard's rows from its cursor on, oldest first (one partition per hour)."""
        now_h = int(self.s.clock() // OUTBOX_PARTITION_S)
        queries: list[tuple[int, tuple[Any, ...]]] = [
            (s, (h, s, lows[s], limit))
            for s in shards
            for h in range(int(lows[s] // OUTBOX_PARTITION_S), now_h + 1)
        ]
        results = _ok(self.s.conn().run_all([("outbox_get", q) for _, q in queries]))
        per: dict[int, list[Row]] = {}
        for (shard, q), rows in zip(queries, results, strict=True):
            for r in rows:
                r["hour"] = q[0]
            per.setdefault(shard, []).extend(rows)
        return per

    def pending_outbox(
        self, *, limit: int = 500, shards: Collection[int] | None = None
    ) -> list[OutboxMessage]:
        """Unpublished outbox rows, oldest first; moves each shard's cursor past published ones.

        Only the partitions of ``shards`` are read and only their cursors move (a relay holds
        some shards; another relay's cursors are its own to move).
        """
        wanted = sorted(range(OUTBOX_SHARDS) if shards is None else set(shards))
        if not wanted:
            return []
        lows = self._cursors()
        per = self._read_outbox(wanted, lows, limit)
        now = self.s.clock()
        rows: list[Row] = []
        moves: list[tuple[str, tuple[Any, ...]]] = []
        for shard in wanted:
            shard_rows = per.get(shard, [])[:limit]
            rows += shard_rows
            # Everything older than the oldest pending row (or the settle window) is published.
            low = min([r["created_at"] for r in shard_rows] + [now - OUTBOX_SETTLE_S])
            if low > lows[shard] + 1.0:
                moves.append(("cursor_set", (low, shard)))
        _ok(self.s.conn().run_all(moves))
        rows.sort(key=lambda r: (r["created_at"], r["id"]))
        out: list[OutboxMessage] = []
        seen: set[str] = set()
        for r in rows:
            self.s.outbox_locs.setdefault(r["id"], set()).add((r["hour"], r["created_at"]))
            if r["id"] in seen or len(out) >= limit:
                continue
            seen.add(r["id"])
            out.append(
                OutboxMessage(
                    id=r["id"],
                    topic=r["topic"],
                    key=r["key"],
                    value=json.loads(r["value"]),
                    created_at=r["created_at"],
                    headers=load_headers(r.get("headers")),
                )
            )
        if len(self.s.outbox_locs) > 100_000:
            self.s.outbox_locs = {}
        return out

    def delete_outbox(self, ids: Sequence[str]) -> None:
        """Forget published outbox rows (by the locations ``pending_outbox`` saw, else a lookup)."""
        if not ids:
            return
        missing = [i for i in ids if i not in self.s.outbox_locs]
        if missing:
            shards = {shard_of(i, OUTBOX_SHARDS) for i in missing}
            per = self._read_outbox(shards, self._cursors(), 10_000)
            wanted = set(missing)
            for rows in per.values():
                for r in rows:
                    if r["id"] in wanted:
                        self.s.outbox_locs.setdefault(r["id"], set()).add(
                            (r["hour"], r["created_at"])
                        )
        deletes = [
            ("outbox_del", (hour, shard_of(i, OUTBOX_SHARDS), created, i))
            for i in dict.fromkeys(ids)
            for hour, created in self.s.outbox_locs.pop(i, set())
        ]
        _ok(self.s.conn().run_all(deletes))
