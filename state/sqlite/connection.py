"""One SQLite file's connections: per process and thread, opened after fork, WAL mode.

Writes run in ``BEGIN IMMEDIATE`` transactions, so a conditional write reads
and writes under one lock; WAL lets readers go on while a writer commits.
``synchronous=NORMAL`` in WAL mode survives a process crash (the case Celery's
redeliveries cover) but may lose the last commits on power loss; use
Scylla/Cassandra where that matters.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from state.constants import SQLITE_BUSY_TIMEOUT_MS, SQLITE_WAL_LIMIT_BYTES
from state.errors import SchemaError, StateError
from state.keys import outbox_shard

__all__ = ["Database", "Transaction"]

T = TypeVar("T")


class Database:
    """The connections of one process (one per thread) to one SQLite file."""

    def __init__(self, path: Path) -> None:
        """Use the database at ``path``; nothing is opened until first use."""
        self.path = path
        self._local = threading.local()

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (a new one in a forked child)."""
        # Connections never cross a fork or a thread: Celery's prefork pool forks after import.
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        self._ensure_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA journal_size_limit = {SQLITE_WAL_LIMIT_BYTES}")
        conn.row_factory = sqlite3.Row
        conn.create_function("outbox_shard", 1, outbox_shard, deterministic=True)
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

    def write(self) -> Transaction:
        """One ``BEGIN IMMEDIATE`` transaction: committed at the end, rolled back on an error."""
        return Transaction(self)

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on this thread's connection; a missing table says to migrate."""
        try:
            return fn(self.conn())
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise SchemaError(
                    f"SQLite store {self.path} has no schema: run `flowbridge migrate`"
                ) from exc
            raise

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None


class Transaction:
    """A ``BEGIN IMMEDIATE`` ... ``COMMIT`` block (``ROLLBACK`` on an error); ``conn`` inside.

    A class, not a generator: it wraps every write, and costs less this way.
    """

    def __init__(self, db: Database) -> None:
        """Begin on ``db``'s connection when entered."""
        self.db = db
        self.conn = db.conn()

    def __enter__(self) -> Self:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StateError(f"SQLite store {self.db.path}: cannot begin a write: {exc}") from exc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.conn.execute("COMMIT")
            return
        self.conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
            raise SchemaError(
                f"SQLite store {self.db.path} has no schema: run `flowbridge migrate`"
            ) from exc
