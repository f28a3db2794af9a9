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
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from state.constants import (
    DEFAULT_RETENTION_S,
    NODE_ACTIVE,
    NODE_CANCELLED,
    NODE_FAILED,
    NODE_PENDING,
    NODE_RUNNING,
    NODE_WAITING,
    RUN_ACTIVE,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_RUNNING,
    RUN_TERMINAL,
    RUN_WAITING,
    SCHEMA_VERSION,
    SQLITE_BUSY_TIMEOUT_MS,
    STATUS_BUCKET_S,
)
from state.errors import SchemaError, StaleFenceError, StateError
from state.models import (
    Arrival,
    CommitResult,
    Delivery,
    DueTimer,
    HistoryEvent,
    NodeCompletion,
    NodeState,
    OutboxMessage,
    Run,
    Wakeup,
)

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    blueprint_id TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    output TEXT,
    error TEXT,
    fence INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    bucket INTEGER NOT NULL,
    reconciled_at REAL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS runs_expires ON runs (expires_at) WHERE expires_at IS NOT NULL;
-- (status, time bucket) index: the reconciler and `flowbridge runs` read it, never scan runs.
CREATE TABLE IF NOT EXISTS run_index (
    status TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (status, bucket, run_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    run_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0,
    output TEXT,
    action TEXT,
    edges_taken TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (run_id, node_id, iteration)
) WITHOUT ROWID;
-- A join's arrivals are a set keyed by predecessor, never a counter.
CREATE TABLE IF NOT EXISTS arrivals (
    run_id TEXT NOT NULL,
    join_id TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    predecessor TEXT NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (run_id, join_id, iteration, predecessor)
) WITHOUT ROWID;
-- One row per context key, so parallel branches writing different keys never conflict.
CREATE TABLE IF NOT EXISTS context (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    written_at REAL NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    node_id TEXT,
    data TEXT,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
-- A suspended node: the event it waits for and/or its timer, and what woke it.
CREATE TABLE IF NOT EXISTS waits (
    run_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    event TEXT,
    due_at REAL,
    woken TEXT,
    woke_event_id TEXT,
    PRIMARY KEY (run_id, node_id, iteration)
) WITHOUT ROWID;
-- Timers by due time (the reconciler's index; a waiting run is found through it).
CREATE INDEX IF NOT EXISTS waits_due ON waits (due_at) WHERE woken IS NULL AND due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS waits_event ON waits (run_id, event) WHERE woken IS NULL;
-- Events delivered to a run, deduplicated by event id; kept until a node consumes them.
CREATE TABLE IF NOT EXISTS inbox (
    run_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT,
    received_at REAL NOT NULL,
    consumed_by TEXT,
    consumed_iteration INTEGER,
    PRIMARY KEY (run_id, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inbox_unconsumed ON inbox (run_id, name, received_at)
    WHERE consumed_by IS NULL;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    key TEXT,
    value TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _bucket(ts: float) -> int:
    return int(ts // STATUS_BUCKET_S)


class SQLiteStore:
    """A ``StateStore`` in one SQLite file (WAL), safe across processes on one host."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        clock: Callable[[], float] = time.time,
    ):
        """Use the database at ``path``; nothing is opened until first use."""
        self.path = Path(path)
        self.retention_s = retention_s
        self._clock = clock
        self._local = threading.local()

    # --- connections ----------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        # Connections never cross a fork or a thread: Celery's prefork pool forks after import.
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        self._ensure_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.row_factory = sqlite3.Row
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _ensure_wal(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL needs a moment of exclusive access and does not wait on
        # busy_timeout: processes that open a fresh file together retry. WAL persists
        # in the file, so later opens only read the mode.
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        delay = 0.005
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise StateError(f"SQLite store {self.path}: cannot enable WAL: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StateError(f"SQLite store {self.path}: cannot begin a write: {exc}") from exc
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None

    def migrate(self) -> None:
        """Create the tables if missing and record the schema version."""
        conn = self._conn()
        conn.executescript(_SCHEMA)
        with self._write() as c:
            row = c.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO schema_version (id, version) VALUES (1, ?)", (SCHEMA_VERSION,)
                )
            elif row["version"] > SCHEMA_VERSION:
                raise SchemaError(
                    f"SQLite store {self.path} has schema {row['version']}, newer than this "
                    f"flowbridge ({SCHEMA_VERSION}): upgrade flowbridge"
                )

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._conn())
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise SchemaError(
                    f"SQLite store {self.path} has no schema: run `flowbridge migrate`"
                ) from exc
            raise

    # --- helpers --------------------------------------------------------
    def _history(
        self,
        c: sqlite3.Connection,
        run_id: str,
        kind: str,
        node_id: str | None,
        data: Any,
        now: float,
    ) -> None:
        seq = c.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM history WHERE run_id = ?", (run_id,)
        ).fetchone()[0]
        c.execute(
            "INSERT INTO history (run_id, seq, at, kind, node_id, data) VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, seq, now, kind, node_id, None if data is None else _dumps(data)),
        )

    def _outbox(self, c: sqlite3.Connection, rows: Sequence[OutboxMessage], now: float) -> None:
        c.executemany(
            "INSERT OR IGNORE INTO outbox (id, topic, key, value, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(m.id, m.topic, m.key, _dumps(m.value), now) for m in rows],
        )

    def _arrive(
        self, c: sqlite3.Connection, run_id: str, iteration: int, arrivals: Sequence[Arrival]
    ) -> None:
        # A set keyed by predecessor: the first arrival of a predecessor is the one kept.
        c.executemany(
            "INSERT OR IGNORE INTO arrivals (run_id, join_id, iteration, predecessor, outcome) "
            "VALUES (?, ?, ?, ?, ?)",
            [(run_id, a.join_id, iteration, a.predecessor, a.outcome) for a in arrivals],
        )

    def _move_run(
        self, c: sqlite3.Connection, run_id: str, status: str, now: float, **cols: Any
    ) -> None:
        old = c.execute("SELECT status, bucket FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        bucket = _bucket(now)
        sets = ", ".join(f"{k} = ?" for k in cols)
        c.execute(
            f"UPDATE runs SET status = ?, updated_at = ?, bucket = ?{', ' + sets if sets else ''} "  # noqa: S608 - column names are ours
            "WHERE run_id = ?",
            (status, now, bucket, *cols.values(), run_id),
        )
        if old is not None and (old["status"], old["bucket"]) != (status, bucket):
            c.execute(
                "DELETE FROM run_index WHERE status = ? AND bucket = ? AND run_id = ?",
                (old["status"], old["bucket"], run_id),
            )
        c.execute(
            "INSERT OR IGNORE INTO run_index (status, bucket, run_id) VALUES (?, ?, ?)",
            (status, bucket, run_id),
        )

    def _touch_run(self, c: sqlite3.Connection, run_id: str, now: float) -> str | None:
        """Record progress on the run (moves its index bucket); returns its status."""
        row = c.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        status: str = row["status"]
        self._move_run(c, run_id, status, now)
        return status

    @staticmethod
    def _run(row: sqlite3.Row) -> Run:
        return Run(
            run_id=row["run_id"],
            blueprint_id=row["blueprint_id"],
            version=row["version"],
            status=row["status"],
            input=_loads(row["input"]),
            snapshot=_loads(row["snapshot"]),
            output=_loads(row["output"]),
            error=row["error"],
            fence=row["fence"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    @staticmethod
    def _node(row: sqlite3.Row) -> NodeState:
        return NodeState(
            run_id=row["run_id"],
            node_id=row["node_id"],
            iteration=row["iteration"],
            status=row["status"],
            attempts=row["attempts"],
            deliveries=row["deliveries"],
            output=_loads(row["output"]),
            action=row["action"],
            edges_taken=tuple(json.loads(row["edges_taken"])),
            error=row["error"],
            updated_at=row["updated_at"],
        )

    def _insert_nodes(
        self,
        c: sqlite3.Connection,
        run_id: str,
        node_ids: Sequence[str],
        iteration: int,
        status: str,
        now: float,
    ) -> None:
        c.executemany(
            "INSERT OR IGNORE INTO nodes (run_id, node_id, iteration, status, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(run_id, n, iteration, status, now) for n in node_ids],
        )

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

    def get_run(self, run_id: str) -> Run | None:
        """Read one run."""
        row = self._read(
            lambda c: c.execute(
                "SELECT * FROM runs WHERE run_id = ? AND (expires_at IS NULL OR expires_at > ?)",
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
            c.execute(
                "UPDATE waits SET woken = 'cancelled' WHERE run_id = ? AND woken IS NULL", (run_id,)
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
            self._touch_run(c, run_id, now)
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
            self._touch_run(c, run_id, now)
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

    # --- waiting: timers and events -----------------------------------
    @staticmethod
    def _check_fence(run_id: str, current: int, fence: int) -> None:
        if fence < current:
            raise StaleFenceError(
                f"run {run_id!r}: fence {fence} is older than the run's fence {current}: "
                "this writer lost its lock"
            )

    def _wake_run(self, c: sqlite3.Connection, run_id: str, now: float) -> None:
        """A node of the run is pending again: a waiting run is running."""
        row = c.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is not None and row["status"] == RUN_WAITING:
            self._move_run(c, run_id, RUN_RUNNING, now)
        else:
            self._touch_run(c, run_id, now)

    def suspend_node(
        self,
        run_id: str,
        node_id: str,
        iteration: int = 0,
        *,
        event: str | None = None,
        due_at: float | None = None,
    ) -> Wakeup | None:
        """Park a running node on an event and/or a timer, or hand it an event already here."""
        now = self._clock()
        key = (run_id, node_id, iteration)
        with self._write() as c:
            node = c.execute(
                "SELECT status FROM nodes WHERE run_id = ? AND node_id = ? AND iteration = ?", key
            ).fetchone()
            if node is None or node["status"] != NODE_RUNNING:
                return None
            wait = c.execute(
                "SELECT * FROM waits WHERE run_id = ? AND node_id = ? AND iteration = ?", key
            ).fetchone()
            if wait is not None and wait["due_at"] is not None:
                due_at = wait["due_at"]  # a re-run never pushes its deadline later
            if event is not None:
                ev = c.execute(
                    "SELECT * FROM inbox WHERE run_id = ? AND name = ? AND consumed_by IS NULL "
                    "ORDER BY received_at LIMIT 1",
                    (run_id, event),
                ).fetchone()
                if ev is not None:
                    self._consume(c, ev, node_id, iteration)
                    c.execute(
                        "INSERT INTO waits (run_id, node_id, iteration, event, due_at, woken,"
                        " woke_event_id) VALUES (?, ?, ?, ?, ?, 'event', ?) "
                        "ON CONFLICT (run_id, node_id, iteration) DO UPDATE SET"
                        " event = excluded.event,"
                        " woken = 'event', woke_event_id = excluded.woke_event_id",
                        (*key, event, due_at, ev["event_id"]),
                    )
                    self._history(
                        c,
                        run_id,
                        "event.consumed",
                        node_id,
                        {"event": event, "id": ev["event_id"]},
                        now,
                    )
                    return Wakeup(
                        kind="event",
                        event_name=event,
                        event_id=ev["event_id"],
                        payload=_loads(ev["payload"]),
                    )
            c.execute(
                "INSERT INTO waits (run_id, node_id, iteration, event, due_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id, node_id, iteration) DO UPDATE SET event = excluded.event,"
                " due_at = excluded.due_at, woken = NULL, woke_event_id = NULL",
                (*key, event, due_at),
            )
            c.execute(
                "UPDATE nodes SET status = ?, updated_at = ? "
                "WHERE run_id = ? AND node_id = ? AND iteration = ?",
                (NODE_WAITING, now, *key),
            )
            self._history(
                c, run_id, "node.waiting", node_id, {"event": event, "due_at": due_at}, now
            )
            busy = c.execute(
                "SELECT 1 FROM nodes WHERE run_id = ? AND status IN (?, ?) LIMIT 1",
                (run_id, NODE_PENDING, NODE_RUNNING),
            ).fetchone()
            run = c.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if busy is None and run is not None and run["status"] == RUN_RUNNING:
                self._move_run(c, run_id, RUN_WAITING, now)
                self._history(c, run_id, "run.waiting", None, None, now)
            else:
                self._touch_run(c, run_id, now)
            return None

    def _consume(
        self, c: sqlite3.Connection, ev: sqlite3.Row, node_id: str, iteration: int
    ) -> None:
        c.execute(
            "UPDATE inbox SET consumed_by = ?, consumed_iteration = ? "
            "WHERE run_id = ? AND event_id = ?",
            (node_id, iteration, ev["run_id"], ev["event_id"]),
        )

    def get_wakeup(self, run_id: str, node_id: str, iteration: int = 0) -> Wakeup | None:
        """What woke the node, if anything did."""

        def q(c: sqlite3.Connection) -> Wakeup | None:
            w = c.execute(
                "SELECT * FROM waits WHERE run_id = ? AND node_id = ? AND iteration = ?",
                (run_id, node_id, iteration),
            ).fetchone()
            if w is None or w["woken"] is None:
                return None
            if w["woken"] == "event":
                ev = c.execute(
                    "SELECT * FROM inbox WHERE run_id = ? AND event_id = ?",
                    (run_id, w["woke_event_id"]),
                ).fetchone()
                return Wakeup(
                    kind="event",
                    event_name=w["event"],
                    event_id=w["woke_event_id"],
                    payload=None if ev is None else _loads(ev["payload"]),
                )
            if w["woken"] == "timer":
                return Wakeup(kind="timer", event_name=w["event"], due_at=w["due_at"])
            return None

        return self._read(q)

    def deliver_event(
        self, run_id: str, name: str, *, event_id: str, payload: Any = None
    ) -> Delivery:
        """Dedupe, then wake the node waiting for ``name`` or keep the event in the inbox."""
        now = self._clock()
        with self._write() as c:
            run = c.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if run is None:
                return Delivery(outcome="no-run")
            seen = c.execute(
                "SELECT 1 FROM inbox WHERE run_id = ? AND event_id = ?", (run_id, event_id)
            ).fetchone()
            if seen is not None:
                self._history(
                    c, run_id, "event.duplicate", None, {"event": name, "id": event_id}, now
                )
                return Delivery(outcome="duplicate")
            if run["status"] in RUN_TERMINAL:
                self._history(
                    c,
                    run_id,
                    "event.unmatched",
                    None,
                    {"event": name, "id": event_id, "reason": f"run is {run['status']}"},
                    now,
                )
                return Delivery(outcome="finished")
            c.execute(
                "INSERT INTO inbox (run_id, event_id, name, payload, received_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (run_id, event_id, name, _dumps(payload), now),
            )
            w = c.execute(
                "SELECT w.node_id, w.iteration FROM waits w JOIN nodes n ON n.run_id = w.run_id "
                "AND n.node_id = w.node_id AND n.iteration = w.iteration "
                "WHERE w.run_id = ? AND w.event = ? AND w.woken IS NULL AND n.status = ? "
                "ORDER BY n.updated_at LIMIT 1",
                (run_id, name, NODE_WAITING),
            ).fetchone()
            if w is None:
                self._history(c, run_id, "event.stored", None, {"event": name, "id": event_id}, now)
                return Delivery(outcome="stored")
            ev = c.execute(
                "SELECT * FROM inbox WHERE run_id = ? AND event_id = ?", (run_id, event_id)
            ).fetchone()
            self._consume(c, ev, w["node_id"], w["iteration"])
            c.execute(
                "UPDATE waits SET woken = 'event', woke_event_id = ? "
                "WHERE run_id = ? AND node_id = ? AND iteration = ?",
                (event_id, run_id, w["node_id"], w["iteration"]),
            )
            c.execute(
                "UPDATE nodes SET status = ?, updated_at = ? "
                "WHERE run_id = ? AND node_id = ? AND iteration = ?",
                (NODE_PENDING, now, run_id, w["node_id"], w["iteration"]),
            )
            self._history(
                c, run_id, "event.matched", w["node_id"], {"event": name, "id": event_id}, now
            )
            self._wake_run(c, run_id, now)
            return Delivery(outcome="matched", node_id=w["node_id"], iteration=w["iteration"])

    def fire_timer(
        self,
        run_id: str,
        node_id: str,
        iteration: int = 0,
        *,
        now: float,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Wake a waiting node whose timer is due, once."""
        key = (run_id, node_id, iteration)
        with self._write() as c:
            w = c.execute(
                "SELECT w.due_at FROM waits w JOIN nodes n ON n.run_id = w.run_id "
                "AND n.node_id = w.node_id AND n.iteration = w.iteration "
                "WHERE w.run_id = ? AND w.node_id = ? AND w.iteration = ? AND w.woken IS NULL "
                "AND n.status = ?",
                (*key, NODE_WAITING),
            ).fetchone()
            if w is None or w["due_at"] is None or w["due_at"] > now:
                return False
            c.execute(
                "UPDATE waits SET woken = 'timer' "
                "WHERE run_id = ? AND node_id = ? AND iteration = ?",
                key,
            )
            c.execute(
                "UPDATE nodes SET status = ?, updated_at = ? "
                "WHERE run_id = ? AND node_id = ? AND iteration = ?",
                (NODE_PENDING, self._clock(), *key),
            )
            self._history(c, run_id, "timer.fired", node_id, {"due_at": w["due_at"]}, self._clock())
            self._wake_run(c, run_id, self._clock())
            self._outbox(c, outbox, self._clock())
            return True

    def due_timers(self, *, now: float, limit: int = 500) -> list[DueTimer]:
        """Unfired timers due by ``now``, oldest first, through the by-due-time index."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT run_id, node_id, iteration, due_at FROM waits "
                "WHERE woken IS NULL AND due_at IS NOT NULL AND due_at <= ? "
                "ORDER BY due_at LIMIT ?",
                (now, limit),
            ).fetchall()
        )
        return [
            DueTimer(
                run_id=r["run_id"],
                node_id=r["node_id"],
                iteration=r["iteration"],
                due_at=r["due_at"],
            )
            for r in rows
        ]

    # --- fences and reconciliation ------------------------------------
    def advance_fence(self, run_id: str) -> int:
        """Advance the run's fence and return it (0 when there is no such run)."""
        with self._write() as c:
            c.execute("UPDATE runs SET fence = fence + 1 WHERE run_id = ?", (run_id,))
            row = c.execute("SELECT fence FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            return 0 if row is None else int(row["fence"])

    def mark_reconciled(
        self,
        run_id: str,
        *,
        stalled_since: float,
        fence: int,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Claim one stall (progress still at ``stalled_since``) with the jobs it re-emits."""
        now = self._clock()
        with self._write() as c:
            row = c.execute(
                "SELECT status, fence, updated_at FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                return False
            self._check_fence(run_id, row["fence"], fence)
            if row["updated_at"] != stalled_since or row["status"] not in RUN_ACTIVE:
                return False
            # Recording the reconciliation as progress ends this stall: a second
            # reconciler that saw the same stall finds it moved on.
            self._move_run(c, run_id, row["status"], now, reconciled_at=now)
            self._history(c, run_id, "run.reconciled", None, {"jobs": len(outbox)}, now)
            self._outbox(c, outbox, now)
            return True

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
