"""Retention on Scylla: a finished run's rows are rewritten with the retention TTL.

A live run never has a TTL (a run may wait 40 days for an event); when it
finishes, every row it owns -- run and node rows (by a compare-and-set on their
last LWT token, so no conditional write is lost), the directory, arrivals,
context, history, waits and inbox rows -- is written again ``USING TTL``.
The caller repairs each node row's unapplied effects before its rewrite
(``state.scylla.apply``): this module only rewrites.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from state.scylla.driver import Row, _Ambiguous, _Conn, _ok
from state.scylla.rows import unset as _u
from state.scylla.session import MAX_CAS_ROUNDS, Key, Session
from state.scylla.writes import batched

__all__ = ["MARK_MARGIN_US", "Retention"]

log = logging.getLogger("flowbridge.state.scylla")

#: How far ahead of now the retention rewrite stamps the effects marks (see ``_expire_row``).
MARK_MARGIN_US: Final = 5_000_000


class Retention:
    """Gives a finished run's rows the retention TTL."""

    def __init__(self, session: Session, *, ttl: int | None = None) -> None:
        """Rewrite through ``session``'s connection, with its TTL (``ttl=0``: lift it, a retry)."""
        self.s = session
        self.ttl_override = ttl

    def _c(self) -> _Conn:
        return self.s.conn()

    @property
    def _ttl(self) -> int:
        return self.s.ttl if self.ttl_override is None else self.ttl_override

    def node_rows(self, run_id: str) -> tuple[list[Row], list[Row]]:
        """The run's directory entries and its node rows (to repair, then ``expire_node``)."""
        c = self._c()
        dirs = c.execute("dir_get", (run_id,))
        keys = [(run_id, d["node_id"], d["iteration"]) for d in dirs]
        node_rows = _ok(c.run_all([("node_get", k) for k in keys]))
        return dirs, [rows[0] for rows in node_rows if rows and rows[0].get("status") is not None]

    def expire_node(self, row: Row) -> None:
        """Rewrite one node row's LWT columns with the TTL."""
        self._expire_row("node", (row["run_id"], row["node_id"], row["iteration"]))

    def expire_rest(self, run_id: str, dirs: list[Row]) -> None:
        """Rewrite the run's other rows with the TTL, the run row last."""
        c = self._c()
        ttl = self._ttl
        now_ts = self.s.now()[1]
        keys: list[Key] = [(run_id, d["node_id"], d["iteration"]) for d in dirs]
        reads = _ok(
            c.run_all(
                [
                    ("context_get", (run_id,)),
                    ("history_get", (run_id,)),
                    ("waits_get", (run_id,)),
                    ("batch_all", (run_id,)),
                ]
                + [("arrival_get", k) for k in keys]
            )
        )
        ctx, hist, waits, batches, arrivals = reads[0], reads[1], reads[2], reads[3], reads[4:]
        writes: list[tuple[str, tuple[Any, ...]]] = [
            (
                "batch_rewrite",
                (run_id, r["batch_id"], r["page"], r["items"], ttl, max(now_ts, r["wt"] + 1)),
            )
            for r in batches
        ]
        for r in waits:
            writes.append(
                (
                    "wait_put",
                    (
                        run_id,
                        r["node_id"],
                        r["iteration"],
                        _u(r["event"]),
                        _u(r["due_at"]),
                        r["at"],
                        ttl,
                        max(now_ts, r["wt"] + 1),
                    ),
                )
            )
        for r in ctx:
            writes.append(
                (
                    "context_put",
                    (run_id, r["key"], r["value"], r["written_at"], ttl, max(now_ts, r["wt"] + 1)),
                )
            )
        for r in hist:
            writes.append(
                (
                    "history_put",
                    (
                        run_id,
                        r["event_id"],
                        r["at"],
                        r["kind"],
                        _u(r["node_id"]),
                        _u(r["data"]),
                        ttl,
                        max(now_ts, r["wt"] + 1),
                    ),
                )
            )
        for k, rows in zip(keys, arrivals, strict=True):
            for r in rows:
                writes.append(
                    (
                        "arrival_put",
                        (*k, r["predecessor"], r["outcome"], ttl, max(now_ts, r["wt"] + 1)),
                    )
                )
        for d in dirs:
            writes.append(
                (
                    "dir_put",
                    (run_id, d["iteration"], d["node_id"], d["at"], ttl, max(now_ts, d["wt"] + 1)),
                )
            )
        _ok(c.run_all(batched(writes)))
        self._expire_inbox(run_id)
        self._expire_row("run", (run_id,))

    def _expire_inbox(self, run_id: str) -> None:
        """Rewrite the run's inbox rows (LWT columns) with the TTL, each by compare-and-set."""
        c = self._c()
        for row in c.execute("inbox_all", (run_id,)):
            key = (run_id, row["event_id"])
            r = row
            for _ in range(MAX_CAS_ROUNDS):
                params = (
                    self._ttl,
                    _u(r["name"]),
                    _u(r["payload"]),
                    _u(r["received_at"]),
                    _u(r["consumed_by"]),
                    _u(r["consumed_it"]),
                    _u(r["consumed_how"]),
                    r["lwt_op"],
                    _u(r.get("recv_op")),
                    *key,
                    r["lwt_op"],
                )
                result = c.run_all([("inbox_rewrite", params)])[0]
                if isinstance(result, Exception) and not isinstance(result, _Ambiguous):
                    raise result
                if not isinstance(result, _Ambiguous) and result and result[0].get("[applied]"):
                    # The insert's row marker has no TTL: a newer one with the TTL replaces it.
                    marker_ts = max(self.s.now()[1], (r.get("wt") or 0) + 1)
                    c.execute("inbox_marker", (*key, self._ttl, marker_ts))
                    break
                rows = c.execute("inbox_get", key, serial=True)
                if not rows:
                    break
                r = rows[0]
            else:
                log.warning(
                    "%s: could not give inbox row %s the retention TTL (kept changing)",
                    self.s.config.redacted_url(),
                    key,
                )

    def _expire_row(self, kind: str, key: tuple[Any, ...]) -> None:
        """Rewrite a run or node row's LWT columns with the TTL (compare-and-set on ``lwt_op``)."""
        self._expire_rows(kind, [key])

    def expire_nodes(self, rows: Sequence[Row]) -> None:
        """``expire_node`` of several rows, each step of all of them at once (three round trips)."""
        self._expire_rows("node", [(r["run_id"], r["node_id"], r["iteration"]) for r in rows])

    def _rewrite(self, kind: str, key: tuple[Any, ...], r: Row) -> tuple[Any, ...]:
        """The ``<kind>_rewrite`` parameters: the row as read, again, with the TTL."""
        if kind == "node":
            return (
                self._ttl,
                r["status"],
                r["attempts"],
                r["deliveries"],
                _u(r["output"]),
                _u(r["action"]),
                _u(r["edges_taken"]),
                _u(r["error"]),
                r["updated_at"],
                r["lwt_op"],
                _u(r["effects"]),
                _u(r.get("wait_event")),
                _u(r.get("wait_due")),
                _u(r.get("wait_bucket")),
                _u(r.get("wait_op")),
                _u(r.get("woken")),
                _u(r.get("woke_event")),
                _u(r.get("claimed_by")),
                _u(r.get("lease_until")),
                *key,
                r["lwt_op"],
            )
        return (
            self._ttl,
            _u(r["blueprint_id"]),
            _u(r["version"]),
            _u(r["input"]),
            _u(r["snapshot"]),
            _u(r["created_at"]),
            r["status"],
            _u(r["status_at"]),
            _u(r["output"]),
            _u(r["error"]),
            _u(r["fence"]),
            _u(r["reconciled_at"]),
            _u(r.get("attempt")),
            r["lwt_op"],
            _u(r["effects"]),
            _u(r.get("parent")),
            *key,
            r["lwt_op"],
        )

    def _marks(self, kind: str, key: tuple[Any, ...], r: Row) -> list[tuple[str, tuple[Any, ...]]]:
        """What follows a rewrite that applied: the row marker and the effects marks, with TTL."""
        marker_ts = max(self.s.now()[1], (r.get("status_wt") or 0) + 1)
        writes: list[tuple[str, tuple[Any, ...]]] = [
            # The INSERT that created the row gave it a row marker without a TTL; a newer
            # marker with one replaces it (it must be newer than the creating write).
            (f"{kind}_marker", (*key, self._ttl, marker_ts)),
        ]
        if r.get("effects_done"):
            # Set elements have no readable WRITETIME on Cassandra 4: stamp them a little
            # in the future so that a late duplicate mark (stamped with its op's time,
            # which is older) cannot land on top without a TTL.
            done_ts = marker_ts + MARK_MARGIN_US
            writes.append(
                (f"{kind}_effects_done", (self._ttl, done_ts, set(r["effects_done"]), *key))
            )
        return writes

    def _expire_rows(self, kind: str, keys: Sequence[tuple[Any, ...]]) -> None:
        """Rewrite run or node rows with the TTL: read all at SERIAL, rewrite all, mark all."""
        c = self._c()
        todo = list(dict.fromkeys(keys))
        for _ in range(MAX_CAS_ROUNDS):
            if not todo:
                return
            # The current tokens, at SERIAL.
            read = _ok(c.run_all([(f"{kind}_get", k) for k in todo], serial=True))
            found = [
                (k, rows[0])
                for k, rows in zip(todo, read, strict=True)
                if rows and rows[0].get("status") is not None
            ]
            results = c.run_all([(f"{kind}_rewrite", self._rewrite(kind, k, r)) for k, r in found])
            todo, marks = [], []
            for (k, r), result in zip(found, results, strict=True):
                if isinstance(result, _Ambiguous):
                    todo.append(k)  # the rewrite is idempotent (lwt_op is unchanged): again
                elif isinstance(result, Exception):
                    raise result
                elif not result or not result[0].get("[applied]"):
                    todo.append(k)  # a conditional write got in between: read again
                else:
                    marks += self._marks(kind, k, r)
            _ok(c.run_all(marks))
        if not todo:
            return
        # Housekeeping only: the row keeps no TTL (a leak, not a wrong state); say so.
        log.warning(
            "%s: could not give %s %s the retention TTL (kept changing)",
            self.s.config.redacted_url(),
            kind,
            ", ".join(map(str, todo)),
        )
