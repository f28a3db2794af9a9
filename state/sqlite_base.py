"""The SQLite store's foundation: schema, connections (per process and thread), WAL, helpers.

``SQLiteBase`` holds what every part of ``SQLiteStore`` uses: the connection
(opened after fork), the ``BEGIN IMMEDIATE`` write transaction, the schema and
the row helpers. The operations are ``state.sqlite`` (runs, nodes, context,
history, outbox) and ``state.sqlite_waits`` (waits, timers, the event inbox,
fences and reconciliation claims).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from state.constants import (
    DEFAULT_RETENTION_S,
    RUN_CANCELLED,
    RUN_TERMINAL,
    SCHEMA_VERSION,
    SQLITE_BUSY_TIMEOUT_MS,
    STATUS_BUCKET_S,
)
from state.errors import SchemaError, StaleFenceError, StateError
from state.models import Arrival, NodeState, OutboxMessage, Run, SchemaChange

__all__ = ["SQLiteBase"]

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


class SQLiteBase:
    """Connections, schema and row helpers of one ``SQLiteStore`` (its base class)."""

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

    def migrate(self) -> SchemaChange:
        """Create the tables if missing and record the schema version."""
        conn = self._conn()
        conn.executescript(_SCHEMA)
        with self._write() as c:
            row = c.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO schema_version (id, version) VALUES (1, ?)", (SCHEMA_VERSION,)
                )
                return SchemaChange(before=None, after=SCHEMA_VERSION)
            if row["version"] > SCHEMA_VERSION:
                raise SchemaError(
                    f"SQLite store {self.path} has schema {row['version']}, newer than this "
                    f"flowbridge ({SCHEMA_VERSION}): upgrade flowbridge"
                )
            if row["version"] < SCHEMA_VERSION:
                # Version 2 only added tables (created above): recording it is the upgrade.
                c.execute("UPDATE schema_version SET version = ? WHERE id = 1", (SCHEMA_VERSION,))
            return SchemaChange(before=int(row["version"]), after=SCHEMA_VERSION)

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
        if status in RUN_TERMINAL:
            # A finished run's waits can never wake anything: take them out of the timer index.
            c.execute(
                "UPDATE waits SET woken = ? WHERE run_id = ? AND woken IS NULL",
                ("cancelled" if status == RUN_CANCELLED else "closed", run_id),
            )

    def _close_wait(self, c: sqlite3.Connection, key: tuple[str, str, int]) -> None:
        """A node settled while parked (cancelled, failed, completed): its wait ends with it."""
        c.execute(
            "UPDATE waits SET woken = 'closed' "
            "WHERE run_id = ? AND node_id = ? AND iteration = ? AND woken IS NULL",
            key,
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

    @staticmethod
    def _check_fence(run_id: str, current: int, fence: int) -> None:
        if fence < current:
            raise StaleFenceError(
                f"run {run_id!r}: fence {fence} is older than the run's fence {current}: "
                "this writer lost its lock"
            )
