"""``SQLiteStore``: the embedded default, for one host.

The deciding operations are ``TransactionalStore``'s (read, rule, write in one
``BEGIN IMMEDIATE`` transaction over ``SQLiteTxn``); this module adds the
reads, which run on the thread's connection without a transaction (WAL gives
them a consistent snapshot per statement), and retention.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from state.codec import load_headers, loads
from state.constants import DEFAULT_RETENTION_S
from state.errors import ConfigError
from state.keys import bucket_of
from state.records import (
    RUN_ACTIVE,
    DueTimer,
    HistoryEvent,
    NodeState,
    NodeStatus,
    OutboxMessage,
    Run,
    SchemaChange,
    Wakeup,
)
from state.rules import waits
from state.sqlite.connection import Database
from state.sqlite.rows import RUN_COLUMNS_NO_SNAPSHOT, node_of, run_of, wait_of
from state.sqlite.schema import migrate
from state.sqlite.txn import SQLiteTxn
from state.sqlite.workflows import TABLES as WORKFLOW_TABLES
from state.sqlite.workflows import SQLiteWorkflows
from state.transactional import TransactionalStore

__all__ = ["SQLiteStore", "open_url", "path_of"]

#: ``?`` for each active run status (a query's ``IN (...)``).
_ACTIVE_MARKS = ", ".join("?" * len(RUN_ACTIVE))

#: Due timers: waits_due is the index; the node and run rows confirm each of its rows.
_DUE_TIMERS_SQL = (
    "SELECT w.run_id, w.node_id, w.iteration, w.due_at FROM waits w "  # noqa: S608 - fixed SQL
    "JOIN nodes n ON n.run_id = w.run_id AND n.node_id = w.node_id "
    "AND n.iteration = w.iteration JOIN runs r ON r.run_id = w.run_id "
    "WHERE w.woken IS NULL AND w.due_at IS NOT NULL AND w.due_at <= ? "
    f"AND n.status = ? AND r.status IN ({_ACTIVE_MARKS}) "
    "ORDER BY w.due_at LIMIT ?"
)

#: Every table holding a run's rows (what retention deletes).
_RUN_TABLES = (
    "nodes",
    "arrivals",
    "context",
    "history",
    "waits",
    "inbox",
    *WORKFLOW_TABLES,
    "batch_pages",
    "run_index",
    "runs",
)
#: Up to this many node ids are read by key; more read the iteration's rows (a batch's items).
_NODES_BY_KEY = 200


class SQLiteStore(TransactionalStore):
    """A ``StateStore`` in one SQLite file (WAL), safe across processes on one host."""

    #: Processes create the schema themselves (``flowbridge migrate`` is not needed first).
    auto_migrate = True
    #: The run's end goes in the last node's commit transaction.
    commits_run_end = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Use the database at ``path``; nothing is opened until first use."""
        self.path = Path(path)
        self._db = Database(self.path)
        super().__init__(begin=self._transaction, clock=clock, retention_s=retention_s)
        #: The code workflow tables.
        self.workflows = SQLiteWorkflows(self._db, clock)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _transaction(self) -> SQLiteTxn:
        return SQLiteTxn(self._db)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (tests and tools read it directly)."""
        return self._db.conn()

    # --- lifecycle ------------------------------------------------------------------------
    def migrate(self) -> SchemaChange:
        """Create the tables if missing and record the schema version; what it did."""
        return migrate(self._db)

    def close(self) -> None:
        """Close this thread's connection."""
        self._db.close()

    # --- runs -----------------------------------------------------------------------------
    def get_run(self, run_id: str, *, snapshot: bool = True) -> Run | None:
        """Read one run (without decoding its snapshot when ``snapshot`` is False)."""
        columns = "*" if snapshot else RUN_COLUMNS_NO_SNAPSHOT
        row = self._db.read(
            lambda c: c.execute(
                f"SELECT {columns} FROM runs "  # noqa: S608 - fixed column lists
                "WHERE run_id = ? AND (expires_at IS NULL OR expires_at > ?)",
                (run_id, self._clock()),
            ).fetchone()
        )
        return None if row is None else run_of(row)

    def get_run_and_node(
        self, run_id: str, node_id: str, iteration: int = 0, *, snapshot: bool = True
    ) -> tuple[Run | None, NodeState | None]:
        """The run and one node record (two reads: each is a local lookup here)."""
        return self.get_run(run_id, snapshot=snapshot), self.get_node(run_id, node_id, iteration)

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

        return [run_of(r) for r in self._db.read(q)]

    def find_stalled(self, *, status: str, older_than: float, limit: int = 100) -> list[str]:
        """Run ids in ``status`` whose last progress is before ``older_than``."""
        rows = self._db.read(
            lambda c: c.execute(
                "SELECT i.run_id FROM run_index i JOIN runs r ON r.run_id = i.run_id "
                "WHERE i.status = ? AND i.bucket <= ? AND r.status = i.status "
                "AND r.updated_at < ? ORDER BY i.bucket LIMIT ?",
                (status, bucket_of(older_than), older_than, limit),
            ).fetchall()
        )
        return [r["run_id"] for r in rows]

    def purge_expired(self, *, limit: int = 1000) -> int:
        """Delete finished runs past their retention, with all their rows; returns how many."""
        now = self._clock()
        with self._db.write() as tx:
            c = tx.conn
            ids = [
                r["run_id"]
                for r in c.execute(
                    "SELECT run_id FROM runs WHERE expires_at IS NOT NULL AND expires_at <= ? "
                    "LIMIT ?",
                    (now, limit),
                )
            ]
            for table in _RUN_TABLES:
                c.executemany(
                    f"DELETE FROM {table} WHERE run_id = ?",  # noqa: S608 - fixed table names
                    [(i,) for i in ids],
                )
            return len(ids)

    # --- nodes, context, history ----------------------------------------------------------
    def get_node(self, run_id: str, node_id: str, iteration: int = 0) -> NodeState | None:
        """Read one node record."""
        row = self._db.read(
            lambda c: c.execute(
                "SELECT * FROM nodes WHERE run_id = ? AND node_id = ? AND iteration = ?",
                (run_id, node_id, iteration),
            ).fetchone()
        )
        return None if row is None else node_of(row)

    def get_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0
    ) -> dict[str, NodeState]:
        """Read the existing records among ``node_ids``."""
        wanted = list(dict.fromkeys(node_ids))
        if not wanted:
            return {}
        if len(wanted) <= _NODES_BY_KEY:
            # By key: a run with a large batch has that many item records at its iteration.
            marks = ", ".join("?" * len(wanted))
            sql = (
                "SELECT * FROM nodes WHERE run_id = ? AND iteration = ? "  # noqa: S608 - marks
                f"AND node_id IN ({marks})"
            )
            rows = self._db.read(lambda c: c.execute(sql, (run_id, iteration, *wanted)).fetchall())
            return {r["node_id"]: node_of(r) for r in rows}
        keep = set(wanted)
        rows = self._db.read(
            lambda c: c.execute(
                "SELECT * FROM nodes WHERE run_id = ? AND iteration = ?", (run_id, iteration)
            ).fetchall()
        )
        return {r["node_id"]: node_of(r) for r in rows if r["node_id"] in keep}

    def get_batch(self, run_id: str, batch: str, pages: Sequence[int]) -> dict[int, list[Any]]:
        """Read pages of a batch."""
        wanted = sorted(set(pages))
        if not wanted:
            return {}
        marks = ", ".join("?" * len(wanted))
        sql = (
            "SELECT page, items FROM batch_pages WHERE run_id = ? AND batch = ? "  # noqa: S608
            f"AND page IN ({marks})"
        )
        rows = self._db.read(lambda c: c.execute(sql, (run_id, batch, *wanted)).fetchall())
        return {r["page"]: loads(r["items"]) for r in rows}

    def get_arrivals(self, run_id: str, join_id: str, iteration: int = 0) -> dict[str, str]:
        """Read a join's arrival set."""
        rows = self._db.read(
            lambda c: c.execute(
                "SELECT predecessor, outcome FROM arrivals "
                "WHERE run_id = ? AND join_id = ? AND iteration = ?",
                (run_id, join_id, iteration),
            ).fetchall()
        )
        return {r["predecessor"]: r["outcome"] for r in rows}

    def get_context(self, run_id: str) -> dict[str, Any]:
        """Read the run context."""
        rows = self._db.read(
            lambda c: c.execute(
                "SELECT key, value FROM context WHERE run_id = ?", (run_id,)
            ).fetchall()
        )
        return {r["key"]: loads(r["value"]) for r in rows}

    def get_history(self, run_id: str) -> list[HistoryEvent]:
        """Read the history in commit order."""
        rows = self._db.read(
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
                data=loads(r["data"]),
            )
            for r in rows
        ]

    # --- waiting --------------------------------------------------------------------------
    def get_wakeup(self, run_id: str, node_id: str, iteration: int = 0) -> Wakeup | None:
        """What woke the node, if anything did."""

        def q(c: sqlite3.Connection) -> Wakeup | None:
            row = c.execute(
                "SELECT * FROM waits WHERE run_id = ? AND node_id = ? AND iteration = ?",
                (run_id, node_id, iteration),
            ).fetchone()
            wait = None if row is None else wait_of(row)
            if wait is None or wait.woken != "event":
                return waits.wakeup_of(wait)
            ev = c.execute(
                "SELECT payload FROM inbox WHERE run_id = ? AND event_id = ?",
                (run_id, wait.woke_event),
            ).fetchone()
            return waits.wakeup_of(wait, None if ev is None else loads(ev["payload"]))

        return self._db.read(q)

    def due_timers(self, *, now: float, limit: int = 500) -> list[DueTimer]:
        """Unfired timers due by ``now``, oldest first, through the by-due-time index."""
        rows = self._db.read(
            lambda c: c.execute(
                _DUE_TIMERS_SQL,
                (now, NodeStatus.WAITING, *sorted(RUN_ACTIVE), limit),
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

    # --- outbox ---------------------------------------------------------------------------
    def pending_outbox(
        self, *, limit: int = 500, shards: Collection[int] | None = None
    ) -> list[OutboxMessage]:
        """Unpublished outbox rows, oldest first (of ``shards`` when given)."""
        if shards is None:
            sql, args = "SELECT * FROM outbox ORDER BY seq LIMIT ?", [limit]
        elif not shards:
            return []
        else:
            # The shard is computed from the id (a function of the connection): no column to add.
            mask = sum(1 << s for s in set(shards))
            sql = "SELECT * FROM outbox WHERE (? >> outbox_shard(id)) & 1 ORDER BY seq LIMIT ?"
            args = [mask, limit]
        rows = self._db.read(lambda c: c.execute(sql, args).fetchall())
        return [
            OutboxMessage(
                id=r["id"],
                topic=r["topic"],
                key=r["key"],
                value=loads(r["value"]),
                created_at=r["created_at"],
                headers=load_headers(r["headers"]),
            )
            for r in rows
        ]

    def delete_outbox(self, ids: Sequence[str]) -> None:
        """Forget published outbox rows."""
        if not ids:
            return
        with self._db.write() as tx:
            tx.conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])


def path_of(url: str) -> Path:
    """Map a SQLAlchemy-style SQLite URL to a path (``sqlite:///rel.db``, ``sqlite:////abs.db``)."""
    if not url.startswith("sqlite:///"):
        raise ConfigError(
            f"FLOWBRIDGE_STATE_URL={url!r}: a SQLite URL looks like sqlite:///relative.db "
            "or sqlite:////absolute/path.db"
        )
    rest = url[len("sqlite:///") :]
    if not rest:
        raise ConfigError(f"FLOWBRIDGE_STATE_URL={url!r} names no file")
    return Path(rest)


def open_url(
    url: str,
    *,
    env: Mapping[str, str],
    retention_s: float | None,
    clock: Callable[[], float] | None,
) -> SQLiteStore:
    """Open ``sqlite:///path`` (the registry's opener); refused on a PaaS dyno."""
    if env.get("DYNO"):
        # A PaaS dyno has an ephemeral disk of its own: each process would see another file.
        raise ConfigError(
            "FLOWBRIDGE_STATE_URL is SQLite but DYNO is set: SQLite works on one host only; "
            "set FLOWBRIDGE_STATE_URL=scylla://... (or SCYLLA_HOSTS) on a PaaS"
        )
    return SQLiteStore(
        path_of(url),
        retention_s=DEFAULT_RETENTION_S if retention_s is None else retention_s,
        clock=time.time if clock is None else clock,
    )
