"""The SQLite store's WAL file shrinks back after a backlog (``journal_size_limit``)."""

from __future__ import annotations

import os
from pathlib import Path

from state.constants import SQLITE_WAL_LIMIT_BYTES
from state.sqlite import SQLiteStore


def test_a_checkpoint_after_a_large_transaction_truncates_the_wal_to_the_limit(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    store.migrate()
    conn = store._conn()
    conn.execute("CREATE TABLE scratch (b BLOB)")
    conn.execute("BEGIN IMMEDIATE")
    for _ in range(40):  # 40 MB in one transaction: the WAL grows past the limit
        conn.execute("INSERT INTO scratch VALUES (?)", (os.urandom(1024 * 1024),))
    conn.execute("COMMIT")
    wal = tmp_path / "state.db-wal"
    assert wal.stat().st_size > SQLITE_WAL_LIMIT_BYTES
    for _ in range(3):  # later small writes restart the WAL after a checkpoint
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO scratch VALUES (x'00')")
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    assert wal.stat().st_size <= SQLITE_WAL_LIMIT_BYTES
    store.close()
