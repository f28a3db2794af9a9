"""The SQLite store's schema: the tables and indexes, and ``migrate``.

One file in WAL mode. The (status, time bucket) index, the timer index
(``waits_due``) and the inbox index are what the reconciler and a suspend
read, so no operation scans ``runs`` or ``nodes``.
"""

from __future__ import annotations

from state.constants import SCHEMA_VERSION
from state.errors import SchemaError
from state.records import SchemaChange
from state.sqlite.connection import Database
from state.sqlite.workflows import SCHEMA as WORKFLOW_SCHEMA

__all__ = ["SCHEMA", "migrate"]

SCHEMA = """
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
    expires_at REAL,
    attempt INTEGER NOT NULL DEFAULT 1,
    parent TEXT
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
    claimed_by TEXT,
    lease_until REAL,
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
-- A batch's items and outputs in pages, so no row (and no message) holds a whole list.
CREATE TABLE IF NOT EXISTS batch_pages (
    run_id TEXT NOT NULL,
    batch TEXT NOT NULL,
    page INTEGER NOT NULL,
    items TEXT NOT NULL,
    PRIMARY KEY (run_id, batch, page)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    key TEXT,
    value TEXT NOT NULL,
    created_at REAL NOT NULL,
    headers TEXT
);
"""


def migrate(db: Database) -> SchemaChange:
    """Create the tables if missing and record the schema version (refuse a newer one)."""
    path = db.path
    db.conn().executescript(SCHEMA + WORKFLOW_SCHEMA)
    with db.write() as tx:
        c = tx.conn
        row = c.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
        if row is None:
            c.execute("INSERT INTO schema_version (id, version) VALUES (1, ?)", (SCHEMA_VERSION,))
            return SchemaChange(before=None, after=SCHEMA_VERSION)
        before = int(row["version"])
        if row["version"] > SCHEMA_VERSION:
            raise SchemaError(
                f"SQLite store {path} has schema {row['version']}, newer than this "
                f"flowbridge ({SCHEMA_VERSION}): upgrade flowbridge"
            )
        elif row["version"] < SCHEMA_VERSION:
            # Versions 2 and 3 only added tables (created above); version 4 adds runs.attempt
            # and outbox.headers, version 5 runs.parent (and the batch pages' table), version 6
            # the node leases (nodes.claimed_by, nodes.lease_until: null, no lease, on old rows).
            for table, column, ddl in (
                ("runs", "attempt", "attempt INTEGER NOT NULL DEFAULT 1"),
                ("outbox", "headers", "headers TEXT"),
                ("runs", "parent", "parent TEXT"),
                ("nodes", "claimed_by", "claimed_by TEXT"),
                ("nodes", "lease_until", "lease_until REAL"),
            ):
                columns = {r["name"] for r in c.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {ddl}")
            c.execute("UPDATE schema_version SET version = ? WHERE id = 1", (SCHEMA_VERSION,))
        return SchemaChange(before=before, after=SCHEMA_VERSION)
