"""SQLite state store: the embedded default, for one host.

Every process opens its own connection after fork (the connection is keyed by
pid and thread); writes run in ``BEGIN IMMEDIATE`` transactions so that a
conditional write reads and writes under one lock; WAL mode lets readers go on
while a writer commits. ``synchronous=NORMAL`` in WAL mode survives a process
crash (the case Celery's redeliveries cover) but may lose the last commits on
power loss; use Scylla/Cassandra where that matters.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from state.constants import (
    NODE_ACTIVE,
    NODE_CANCELLED,
    NODE_FAILED,
    NODE_PENDING,
    NODE_RUNNING,
    RUN_ACTIVE,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_TERMINAL,
)
from state.errors import StateError
from state.models import (
    Arrival,
    CommitResult,
    HistoryEvent,
    NodeCompletion,
    NodeState,
    OutboxMessage,
    Run,
)
from state.sqlite_base import _bucket, _dumps, _loads
from state.sqlite_waits import SQLiteWaitsMixin

__all__ = ["SQLiteStore"]

#: A run row without its blueprint snapshot (an empty JSON object in its place).
_RUN_COLUMNS_NO_SNAPSHOT = (
    "run_id, blueprint_id, version, status, input, '{}' AS snapshot, output, error, fence, "
    "created_at, updated_at"
)


class SQLiteStore(SQLiteWaitsMixin):
    """A ``StateStore`` in one SQLite file (WAL), safe across processes on one host."""

    # --- runs -----------------------------------------------------------
    def create_run(
        self, run: Run, *, start_nodes: Sequence[str], outbox: Sequence[OutboxMessage] = ()
    ) -> tuple[bool, Run]:
        """Create the run and its start nodes if no run with that id exists."""
        now = self._clock()
        with self._write() as c:
            row = c.execute("SELECT * FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
            if row is not None:
                return False, self._run(row)
            c.execute(
                "INSERT INTO runs (run_id, blueprint_id, version, status, input, snapshot, output,"
                " error, fence, created_at, updated_at, bucket, expires_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run.run_id,
                    run.blueprint_id,
                    run.version,
                    run.status,
                    _dumps(run.input),
                    _dumps(run.snapshot),
                    _dumps(run.output) if run.output is not None else None,
                    run.error,
                    run.fence,
                    now,
                    now,
                    _bucket(now),
                    # A run born finished (a rejected start) expires like any finished run.
                    now + self.retention_s if run.status in RUN_TERMINAL else None,
                ),
            )
            c.execute(
                "INSERT INTO run_index (status, bucket, run_id) VALUES (?, ?, ?)",
                (run.status, _bucket(now), run.run_id),
            )
            self._insert_nodes(c, run.run_id, start_nodes, 0, NODE_PENDING, now)
            self._history(c, run.run_id, "run.created", None, {"blueprint": run.blueprint_id}, now)
            if run.status in RUN_TERMINAL:
                self._history(c, run.run_id, f"run.{run.status}", None, {"error": run.error}, now)
            self._outbox(c, outbox, now)
            stored = c.execute("SELECT * FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
            return True, self._run(stored)

    def get_run(self, run_id: str, *, snapshot: bool = True) -> Run | None:
        """Read one run (without decoding its snapshot when ``snapshot`` is False)."""
        columns = "*" if snapshot else _RUN_COLUMNS_NO_SNAPSHOT
        row = self._read(
            lambda c: c.execute(
                f"SELECT {columns} FROM runs "  # noqa: S608 - fixed column lists
                "WHERE run_id = ? AND (expires_at IS NULL OR expires_at > ?)",
                (run_id, self._clock()),
            ).fetchone()
        )
        return None if row is None else self._run(row)

    def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[Run]:
        """List recent runs newest first, through the status index when a status is given."""

        def q(c: sqlite3.Connection) -> list[sqlite3.Row]:
            if status is None:
                return c.execute(
                    "SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)
                ).fetchall()
            return c.execute(
                "SELECT r.* FROM run_index i JOIN runs r ON r.run_id = i.run_id "
                "WHERE i.status = ? AND r.status = i.status "
                "ORDER BY i.bucket DESC, r.updated_at DESC LIMIT ?",
                (status, limit),
            ).fetchall()

        return [self._run(r) for r in self._read(q)]

    def set_run_status(self, run_id: str, *, from_: Collection[str], to: str) -> bool:
        """Move the run to ``to`` if its status is in ``from_``."""
        now = self._clock()
        with self._write() as c:
            row = c.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None or row["status"] not in from_:
                return False
            if to in RUN_TERMINAL:
                self._move_run(c, run_id, to, now, expires_at=now + self.retention_s)
            else:
                self._move_run(c, run_id, to, now)
            self._history(c, run_id, f"run.{to}", None, None, now)
            return True

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
        now = self._clock()
        with self._write() as c:
            row = c.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None or row["status"] not in RUN_ACTIVE:
                return False
            self._move_run(
                c,
                run_id,
                status,
                now,
                output=_dumps(output) if output is not None else None,
                error=error,
                expires_at=now + self.retention_s,
            )
            self._history(
                c, run_id, f"run.{status}", None, {"error": error} if error else None, now
            )
            self._outbox(c, outbox, now)
            return True

    def cancel_run(
        self,
        run_id: str,
        *,
        reason: str,
        outbox: Sequence[OutboxMessage] = (),
        fence: int | None = None,
    ) -> tuple[bool, Run | None]:
        """Cancel an active run, its active nodes and timers, or leave a marker for its start."""
        now = self._clock()
        with self._write() as c:
            row = c.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is not None and fence is not None:
                self._check_fence(run_id, row["fence"], fence)
            if row is None:
                # A cancel that overtook its start: the marker makes the start a no-op.
                c.execute(
                    "INSERT INTO runs (run_id, blueprint_id, version, status, input, snapshot,"
                    " error, created_at, updated_at, bucket, expires_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        run_id,
                        "",
                        "",
                        RUN_CANCELLED,
                        "null",
                        "{}",
                        reason,
                        now,
                        now,
                        _bucket(now),
                        now + self.retention_s,
                    ),
                )
                c.execute(
                    "INSERT INTO run_index (status, bucket, run_id) VALUES (?, ?, ?)",
                    (RUN_CANCELLED, _bucket(now), run_id),
                )
                self._history(
                    c, run_id, "run.cancelled", None, {"reason": reason, "marker": True}, now
                )
                return True, None
            before = self._run(row)
            if before.status not in RUN_ACTIVE:
                return False, before
            self._move_run(
                c, run_id, RUN_CANCELLED, now, error=reason, expires_at=now + self.retention_s
            )
            c.execute(
                "UPDATE nodes SET status = ?, error = ?, updated_at = ? "
                "WHERE run_id = ? AND status IN (?, ?, ?)",
                (NODE_CANCELLED, reason, now, run_id, *sorted(NODE_ACTIVE)),
            )
            self._history(c, run_id, "run.cancelled", None, {"reason": reason}, now)
            self._outbox(c, outbox, now)
            return True, before

    # --- nodes ----------------------------------------------------------
    def get_node(self, run_id: str, node_id: str, iteration: int = 0) -> NodeState | None:
        """Read one node record."""
        row = self._read(
            lambda c: c.execute(
                "SELECT * FROM nodes WHERE run_id = ? AND node_id = ? AND iteration = ?",
                (run_id, node_id, iteration),
            ).fetchone()
        )
        return None if row is None else self._node(row)

    def get_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0
    ) -> dict[str, NodeState]:
        """Read the existing records among ``node_ids``."""
        wanted = set(node_ids)
        rows = self._read(
            lambda c: c.execute(
                "SELECT * FROM nodes WHERE run_id = ? AND iteration = ?", (run_id, iteration)
            ).fetchall()
        )
        return {r["node_id"]: self._node(r) for r in rows if r["node_id"] in wanted}

    def begin_attempt(
        self, run_id: str, node_id: str, iteration: int, attempt: int, *, takeover: bool = False
    ) -> NodeState | None:
        """Claim a pending node (or, with ``takeover``, a running one) for ``attempt``."""
        now = self._clock()
        key = (run_id, node_id, iteration)
        with self._write() as c:
            row = c.execute(
                "SELECT * FROM nodes WHERE run_id = ? AND node_id = ? AND iteration = ?", key
            ).fetchone()
            if row is None or row["status"] not in (NODE_PENDING, NODE_RUNNING):
                return None
            if row["status"] == NODE_RUNNING and not takeover:
                return None
            attempt = max(attempt, row["attempts"], 1)
            deliveries = row["deliveries"] + 1 if attempt == row["attempts"] else 1
            c.execute(
                "UPDATE nodes SET status = ?, attempts = ?, deliveries = ?, updated_at = ? "
                "WHERE run_id = ? AND node_id = ? AND iteration = ?",
                (NODE_RUNNING, attempt, deliveries, now, *key),
            )
            self._touch_run(c, run_id, now)
            self._history(
                c,
                run_id,
                "node.started",
                node_id,
                {"attempt": attempt, "delivery": deliveries},
                now,
            )
            updated = c.execute(
                "SELECT * FROM nodes WHERE run_id = ? AND node_id = ? AND iteration = ?", key
            ).fetchone()
            return self._node(updated)

    def commit_node(self, completion: NodeCompletion) -> CommitResult:
        """Apply a node completion once, with everything it causes."""
        cp = completion
        now = self._clock()
        key = (cp.run_id, cp.node_id, cp.iteration)
        with self._write() as c:
            row = c.execute(
                "SELECT * FROM nodes WHERE run_id = ? AND node_id = ? AND iteration = ?", key
            ).fetchone()
            run_row = c.execute("SELECT status FROM runs WHERE run_id = ?", (cp.run_id,)).fetchone()
            run_status: str = run_row["status"] if run_row is not None else RUN_FAILED
            if row is None or row["status"] not in NODE_ACTIVE:
                if row is None:
                    raise StateError(
                        f"run {cp.run_id!r}: node {cp.node_id!r} has no record to complete"
                    )
                return CommitResult(applied=False, node=self._node(row), run_status=run_status)
            c.execute(
                "UPDATE nodes SET status = ?, output = ?, action = ?, edges_taken = ?, "
                "error = NULL,"
                " attempts = MAX(attempts, ?), updated_at = ? "
                "WHERE run_id = ? AND node_id = ? AND iteration = ?",
                (
                    cp.status,
                    _dumps(cp.output),
                    cp.action,
                    _dumps(list(cp.edges_taken)),
                    cp.attempt,
                    now,
                    *key,
                ),
            )
            self._close_wait(c, key)
            kind = f"node.{cp.status}"
            self._history(c, cp.run_id, kind, cp.node_id, {"action": cp.action}, now)
            if run_status in RUN_ACTIVE:
                # Only a live run gets successors: a late node must not restart a finished run.
                self._insert_nodes(c, cp.run_id, cp.pending, cp.iteration, NODE_PENDING, now)
                self._insert_nodes(c, cp.run_id, cp.skipped, cp.iteration, "skipped", now)
                self._arrive(c, cp.run_id, cp.iteration, cp.arrivals)
                c.executemany(
                    "INSERT INTO context (run_id, key, value, written_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, "
                    "written_at = excluded.written_at",
                    [(cp.run_id, k, _dumps(v), now) for k, v in cp.context_writes.items()],
                )
                self._outbox(c, cp.outbox, now)
                self._touch_run(c, cp.run_id, now)
            updated = c.execute(
                "SELECT * FROM nodes WHERE run_id = ? AND node_id = ? AND iteration = ?", key
            ).fetchone()
            return CommitResult(applied=True, node=self._node(updated), run_status=run_status)

    def retry_node(
        self, run_id: str, node_id: str, iteration: int, *, attempt: int, error: str
    ) -> bool:
        """Put an active node back to pending after failed ``attempt``."""
        now = self._clock()
        key = (run_id, node_id, iteration)
        with self._write() as c:
            row = c.execute(
                "SELECT status FROM nodes WHERE run_id = ? AND node_id = ? AND iteration = ?", key
            ).fetchone()
            if row is None or row["status"] not in NODE_ACTIVE:
                return False
            c.execute(
                "UPDATE nodes SET status = ?, attempts = MAX(attempts, ?), error = ?, "
                "updated_at = ?"
                " WHERE run_id = ? AND node_id = ? AND iteration = ?",
                (NODE_PENDING, attempt, error, now, *key),
            )
            # A parked node retried: a waiting run has a pending node again.
            self._wake_run(c, run_id, now)
            self._history(
                c, run_id, "node.retry", node_id, {"attempt": attempt, "error": error}, now
            )
            return True

    def fail_node(
        self,
        run_id: str,
        node_id: str,
        iteration: int,
        *,
        error: str,
        fallback: str | None = None,
        fail_run: bool = True,
        outbox: Sequence[OutboxMessage] = (),
        skipped: Sequence[str] = (),
        arrivals: Sequence[Arrival] = (),
    ) -> bool:
        """Fail an active node for good; start its fallback, fail the run, or arrive at joins."""
        now = self._clock()
        key = (run_id, node_id, iteration)
        with self._write() as c:
            row = c.execute(
                "SELECT status FROM nodes WHERE run_id = ? AND node_id = ? AND iteration = ?", key
            ).fetchone()
            if row is None or row["status"] not in NODE_ACTIVE:
                return False
            c.execute(
                "UPDATE nodes SET status = ?, error = ?, updated_at = ? "
                "WHERE run_id = ? AND node_id = ? AND iteration = ?",
                (NODE_FAILED, error, now, *key),
            )
            self._close_wait(c, key)
            self._history(
                c, run_id, "node.failed", node_id, {"error": error, "fallback": fallback}, now
            )
            run_row = c.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            live = run_row is not None and run_row["status"] in RUN_ACTIVE
            if live and fallback is not None:
                self._insert_nodes(c, run_id, [fallback], iteration, NODE_PENDING, now)
                self._touch_run(c, run_id, now)
            elif live and fail_run:
                self._move_run(
                    c, run_id, RUN_FAILED, now, error=error, expires_at=now + self.retention_s
                )
                self._history(c, run_id, "run.failed", None, {"error": error}, now)
                self._outbox(c, outbox, now)
            elif live:
                self._insert_nodes(c, run_id, skipped, iteration, "skipped", now)
                self._arrive(c, run_id, iteration, arrivals)
                self._touch_run(c, run_id, now)
            return True

    def cancel_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0, *, reason: str
    ) -> list[str]:
        """Cancel the active ones among ``node_ids``."""
        now = self._clock()
        cancelled: list[str] = []
        with self._write() as c:
            for node_id in node_ids:
                cur = c.execute(
                    "UPDATE nodes SET status = ?, error = ?, updated_at = ? "
                    "WHERE run_id = ? AND node_id = ? AND iteration = ? AND status IN (?, ?, ?)",
                    (NODE_CANCELLED, reason, now, run_id, node_id, iteration, *sorted(NODE_ACTIVE)),
                )
                if cur.rowcount == 1:
                    cancelled.append(node_id)
                    self._close_wait(c, (run_id, node_id, iteration))
                    self._history(c, run_id, "node.cancelled", node_id, {"reason": reason}, now)
            return cancelled

    def fire_join(self, run_id: str, join_id: str, iteration: int = 0) -> bool:
        """Create the join's pending record once."""
        now = self._clock()
        with self._write() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO nodes (run_id, node_id, iteration, status, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (run_id, join_id, iteration, NODE_PENDING, now),
            )
            if cur.rowcount != 1:
                return False
            self._history(c, run_id, "join.fired", join_id, None, now)
            # Fired while the run waits (a late chord body): the run is running again.
            self._wake_run(c, run_id, now)
            return True

    def get_arrivals(self, run_id: str, join_id: str, iteration: int = 0) -> dict[str, str]:
        """Read a join's arrival set."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT predecessor, outcome FROM arrivals "
                "WHERE run_id = ? AND join_id = ? AND iteration = ?",
                (run_id, join_id, iteration),
            ).fetchall()
        )
        return {r["predecessor"]: r["outcome"] for r in rows}

    # --- context and history -------------------------------------------
    def get_context(self, run_id: str) -> dict[str, Any]:
        """Read the run context."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT key, value FROM context WHERE run_id = ?", (run_id,)
            ).fetchall()
        )
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def append_history(
        self, run_id: str, kind: str, *, node_id: str | None = None, data: Any = None
    ) -> None:
        """Append one history event."""
        now = self._clock()
        with self._write() as c:
            self._history(c, run_id, kind, node_id, data, now)

    def get_history(self, run_id: str) -> list[HistoryEvent]:
        """Read the history in commit order."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT * FROM history WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()
        )
        return [
            HistoryEvent(
                run_id=r["run_id"],
                seq=r["seq"],
                at=r["at"],
                kind=r["kind"],
                node_id=r["node_id"],
                data=_loads(r["data"]),
            )
            for r in rows
        ]

    # --- reconciliation and outbox -------------------------------------
    def find_stalled(self, *, status: str, older_than: float, limit: int = 100) -> list[str]:
        """Run ids in ``status`` whose last progress is before ``older_than``."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT i.run_id FROM run_index i JOIN runs r ON r.run_id = i.run_id "
                "WHERE i.status = ? AND i.bucket <= ? AND r.status = i.status "
                "AND r.updated_at < ? ORDER BY i.bucket LIMIT ?",
                (status, _bucket(older_than), older_than, limit),
            ).fetchall()
        )
        return [r["run_id"] for r in rows]

    def purge_expired(self, *, limit: int = 1000) -> int:
        """Delete finished runs past their retention, with all their rows; returns how many."""
        now = self._clock()
        with self._write() as c:
            ids = [
                r["run_id"]
                for r in c.execute(
                    "SELECT run_id FROM runs WHERE expires_at IS NOT NULL AND expires_at <= ? "
                    "LIMIT ?",
                    (now, limit),
                )
            ]
            for table in (
                "nodes",
                "arrivals",
                "context",
                "history",
                "waits",
                "inbox",
                "run_index",
                "runs",
            ):
                c.executemany(
                    f"DELETE FROM {table} WHERE run_id = ?",  # noqa: S608 - fixed table names
                    [(i,) for i in ids],
                )
            return len(ids)

    def pending_outbox(self, *, limit: int = 500) -> list[OutboxMessage]:
        """Unpublished outbox rows, oldest first."""
        rows = self._read(
            lambda c: c.execute("SELECT * FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        )
        return [
            OutboxMessage(
                id=r["id"],
                topic=r["topic"],
                key=r["key"],
                value=json.loads(r["value"]),
                created_at=r["created_at"],
            )
            for r in rows
        ]

    def delete_outbox(self, ids: Sequence[str]) -> None:
        """Forget published outbox rows."""
        if not ids:
            return
        with self._write() as c:
            c.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
