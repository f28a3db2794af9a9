"""The primitives of one SQLite write transaction (``state.transactional.Txn``), in SQL.

Each method is one or two statements on the connection that holds the
``BEGIN IMMEDIATE`` lock; none decides anything (``state.rules`` does).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from state.codec import dump_headers, dumps
from state.keys import bucket_of
from state.records import NODE_ACTIVE, Arrival, NodeState, NodeStatus, OutboxMessage, Run
from state.rules import KEEP, RunView, Wait
from state.rules.waits import InboxEvent
from state.sqlite.connection import Database, Transaction
from state.sqlite.rows import event_of, node_of, run_of, view_of, wait_of
from state.transactional import Key, NodeField

__all__ = ["SQLiteTxn"]

_NODE = "SELECT * FROM nodes WHERE run_id = ? AND node_id = ? AND iteration = ?"
_KEY = "run_id = ? AND node_id = ? AND iteration = ?"
_ACTIVE = tuple(str(s) for s in sorted(NODE_ACTIVE))
#: How a wait that ended without waking is marked (SQLite only: Scylla's wait is its node row).
_CLOSED, _CANCELLED = "closed", "cancelled"


@functools.cache
def _update_sql(fields: tuple[NodeField, ...], if_active: bool) -> str:
    sets = ", ".join(f"{f} = ?" for f in fields)
    cond = " AND status IN (?, ?, ?)" if if_active else ""
    return f"UPDATE nodes SET {sets} WHERE {_KEY}{cond}"  # noqa: S608 - column names are ours


@functools.cache
def _update_run_sql(columns: tuple[str, ...]) -> str:
    sets = "".join(f", {k} = ?" for k in columns)
    return f"UPDATE runs SET status = ?, updated_at = ?, bucket = ?{sets} WHERE run_id = ?"  # noqa: S608 - column names are ours


def _column(node: NodeState, field: NodeField) -> Any:
    if field == "output":
        return dumps(node.output)
    if field == "edges_taken":
        return dumps(list(node.edges_taken))
    if field == "status":
        return str(node.status)  # an exact str binds without sqlite3's adapter lookup
    return getattr(node, field)


class SQLiteTxn(Transaction):
    """One ``BEGIN IMMEDIATE`` transaction and its reads and writes (a context manager)."""

    def __init__(self, db: Database) -> None:
        """Begin on ``db`` when entered; commit when the block ends."""
        super().__init__(db)
        self.c = self.conn

    # --- reads ----------------------------------------------------------------------------
    def run(self, run_id: str) -> Run | None:
        """The whole run record."""
        row = self.c.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else run_of(row)

    def run_view(self, run_id: str) -> RunView | None:
        """Status, fence, last progress and last stall claim of a run."""
        row = self.c.execute(
            "SELECT run_id, status, fence, updated_at, reconciled_at, attempt FROM runs "
            "WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        return None if row is None else view_of(row)

    def run_status(self, run_id: str) -> RunView | None:
        """The run's status (a read that stops before the snapshot column)."""
        row = self.c.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else RunView(run_id=run_id, status=row[0])

    def node(self, key: Key) -> NodeState | None:
        """One node record."""
        row = self.c.execute(_NODE, key).fetchone()
        return None if row is None else node_of(row)

    def wait(self, key: Key) -> Wait | None:
        """The node's wait."""
        row = self.c.execute(f"SELECT * FROM waits WHERE {_KEY}", key).fetchone()  # noqa: S608
        return None if row is None else wait_of(row)

    def parked(self, key: Key) -> tuple[NodeState, Wait, str] | None:
        """The wait with its node's status and its run's status, in one read."""
        row = self.c.execute(
            "SELECT w.*, n.status AS node_status, r.status AS run_status FROM waits w "
            "JOIN nodes n ON n.run_id = w.run_id AND n.node_id = w.node_id "
            "AND n.iteration = w.iteration JOIN runs r ON r.run_id = w.run_id "
            "WHERE w.run_id = ? AND w.node_id = ? AND w.iteration = ?",
            key,
        ).fetchone()
        if row is None:
            return None
        run_id, node_id, iteration = key
        node = NodeState(
            run_id=run_id, node_id=node_id, iteration=iteration, status=row["node_status"]
        )
        return node, wait_of(row), row["run_status"]

    def waiter(self, run_id: str, name: str) -> tuple[NodeState, Wait] | None:
        """The node waiting longest for ``name`` (the ``waits_event`` index)."""
        row = self.c.execute(
            "SELECT w.*, n.status AS node_status FROM waits w JOIN nodes n "
            "ON n.run_id = w.run_id AND n.node_id = w.node_id AND n.iteration = w.iteration "
            "WHERE w.run_id = ? AND w.event = ? AND w.woken IS NULL AND n.status = ? "
            "ORDER BY n.updated_at LIMIT 1",
            (run_id, name, NodeStatus.WAITING),
        ).fetchone()
        if row is None:
            return None
        node = NodeState(
            run_id=run_id,
            node_id=row["node_id"],
            iteration=row["iteration"],
            status=row["node_status"],
        )
        return node, wait_of(row)

    def busy(self, run_id: str) -> bool:
        """Whether a node of the run is pending or running."""
        row = self.c.execute(
            "SELECT 1 FROM nodes WHERE run_id = ? AND status IN (?, ?) LIMIT 1",
            (run_id, NodeStatus.PENDING, NodeStatus.RUNNING),
        ).fetchone()
        return row is not None

    def oldest_event(self, run_id: str, name: str) -> InboxEvent | None:
        """The oldest unconsumed event named ``name`` (the ``inbox_unconsumed`` index)."""
        row = self.c.execute(
            "SELECT * FROM inbox WHERE run_id = ? AND name = ? AND consumed_by IS NULL "
            "ORDER BY received_at LIMIT 1",
            (run_id, name),
        ).fetchone()
        return None if row is None else event_of(row)

    def seen(self, run_id: str, event_id: str) -> bool:
        """Whether the inbox has that event id."""
        row = self.c.execute(
            "SELECT 1 FROM inbox WHERE run_id = ? AND event_id = ?", (run_id, event_id)
        ).fetchone()
        return row is not None

    # --- runs -----------------------------------------------------------------------------
    def insert_run(self, run: Run, *, now: float, expires_at: float | None) -> None:
        """Insert the run row and its index entry."""
        self.c.execute(
            "INSERT INTO runs (run_id, blueprint_id, version, status, input, snapshot, output,"
            " error, fence, created_at, updated_at, bucket, expires_at, parent)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run.run_id,
                run.blueprint_id,
                run.version,
                run.status,
                dumps(run.input),
                dumps(run.snapshot),
                dumps(run.output) if run.output is not None else None,
                run.error,
                run.fence,
                now,
                now,
                bucket_of(now),
                expires_at,
                None if run.parent is None else dumps(run.parent),
            ),
        )
        self.c.execute(
            "INSERT INTO run_index (status, bucket, run_id) VALUES (?, ?, ?)",
            (run.status, bucket_of(now), run.run_id),
        )

    def update_run(
        self,
        run_id: str,
        status: str,
        *,
        now: float,
        output: Any = KEEP,
        error: Any = KEEP,
        expires_at: float | None = None,
        reconciled_at: float | None = None,
    ) -> None:
        """Set status (and columns) and move the run's index entry to (status, bucket(now))."""
        cols: dict[str, Any] = {}
        if output is not KEEP:
            cols["output"] = dumps(output) if output is not None else None
        if error is not KEEP:
            cols["error"] = error
        if expires_at is not None:
            cols["expires_at"] = expires_at
        if reconciled_at is not None:
            cols["reconciled_at"] = reconciled_at
        c = self.c
        old = c.execute("SELECT status, bucket FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        bucket = bucket_of(now)
        c.execute(_update_run_sql(tuple(cols)), (str(status), now, bucket, *cols.values(), run_id))
        if old is not None and (old["status"], old["bucket"]) != (status, bucket):
            c.execute(
                "DELETE FROM run_index WHERE status = ? AND bucket = ? AND run_id = ?",
                (old["status"], old["bucket"], run_id),
            )
        c.execute(
            "INSERT OR IGNORE INTO run_index (status, bucket, run_id) VALUES (?, ?, ?)",
            (str(status), bucket, run_id),
        )

    def set_fence(self, run_id: str, fence: int) -> None:
        """Set the run's fence."""
        self.c.execute("UPDATE runs SET fence = ? WHERE run_id = ?", (fence, run_id))

    def end_waits(self, run_id: str, *, cancelled: bool) -> None:
        """End the run's open waits (out of the timer index)."""
        self.c.execute(
            "UPDATE waits SET woken = ? WHERE run_id = ? AND woken IS NULL",
            (_CANCELLED if cancelled else _CLOSED, run_id),
        )

    def delete_run(self, run_id: str) -> None:
        """Delete the run's row and its index entries."""
        self.c.execute("DELETE FROM run_index WHERE run_id = ?", (run_id,))
        self.c.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    def set_attempt(self, run_id: str, attempt: int) -> None:
        """Set the run's attempt."""
        self.c.execute("UPDATE runs SET attempt = ? WHERE run_id = ?", (attempt, run_id))

    def revive(self, run_id: str) -> None:
        """Clear the run's retention expiry."""
        self.c.execute("UPDATE runs SET expires_at = NULL WHERE run_id = ?", (run_id,))

    def reset_nodes(self, run_id: str, node_ids: Sequence[str], iteration: int) -> None:
        """Delete the node records, their waits and the arrivals they made."""
        keys = [(run_id, n, iteration) for n in node_ids]
        self.c.executemany(f"DELETE FROM nodes WHERE {_KEY}", keys)  # noqa: S608 - fixed SQL
        self.c.executemany(f"DELETE FROM waits WHERE {_KEY}", keys)  # noqa: S608 - fixed SQL
        self.c.executemany(
            "DELETE FROM arrivals WHERE run_id = ? AND predecessor = ? AND iteration = ?", keys
        )

    # --- nodes ----------------------------------------------------------------------------
    def insert_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int, status: str, *, now: float
    ) -> None:
        """Create the node records that do not exist."""
        self.c.executemany(
            "INSERT OR IGNORE INTO nodes (run_id, node_id, iteration, status, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(run_id, n, iteration, str(status), now) for n in node_ids],
        )

    def create_node(self, node: NodeState) -> bool:
        """Create one record if there is none (``INSERT OR IGNORE``)."""
        cur = self.c.execute(
            "INSERT OR IGNORE INTO nodes (run_id, node_id, iteration, status, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (node.run_id, node.node_id, node.iteration, node.status, node.updated_at),
        )
        return cur.rowcount == 1

    def update_node(
        self, node: NodeState, fields: Sequence[NodeField], *, if_active: bool = False
    ) -> bool:
        """``UPDATE nodes SET <fields>`` (with ``if_active``: ``AND status IN (active)``)."""
        params = [_column(node, f) for f in fields]
        params += [node.run_id, node.node_id, node.iteration]
        if if_active:
            params += _ACTIVE
        cur = self.c.execute(_update_sql(tuple(fields), if_active), params)
        return cur.rowcount == 1

    def cancel_active_nodes(self, run_id: str, *, reason: str, now: float) -> None:
        """Cancel the run's active node records."""
        self.c.execute(
            "UPDATE nodes SET status = ?, error = ?, updated_at = ? "
            "WHERE run_id = ? AND status IN (?, ?, ?)",
            (NodeStatus.CANCELLED, reason, now, run_id, *_ACTIVE),
        )

    def arrive(self, run_id: str, iteration: int, arrivals: Sequence[Arrival]) -> None:
        """Add arrivals (``INSERT OR IGNORE``: a predecessor's first arrival is kept)."""
        self.c.executemany(
            "INSERT OR IGNORE INTO arrivals (run_id, join_id, iteration, predecessor, outcome) "
            "VALUES (?, ?, ?, ?, ?)",
            [(run_id, a.join_id, iteration, a.predecessor, a.outcome) for a in arrivals],
        )

    # --- context, history, outbox ---------------------------------------------------------
    def set_context(self, run_id: str, values: Mapping[str, Any], *, now: float) -> None:
        """Upsert context keys."""
        self.c.executemany(
            "INSERT INTO context (run_id, key, value, written_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, "
            "written_at = excluded.written_at",
            [(run_id, k, dumps(v), now) for k, v in values.items()],
        )

    def delete_context(self, run_id: str, keys: Sequence[str]) -> None:
        """Delete context keys."""
        self.c.executemany(
            "DELETE FROM context WHERE run_id = ? AND key = ?", [(run_id, k) for k in keys]
        )

    def put_batch(self, run_id: str, batch: str, pages: Mapping[int, Sequence[Any]]) -> None:
        """Upsert pages of a batch."""
        self.c.executemany(
            "INSERT INTO batch_pages (run_id, batch, page, items) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (run_id, batch, page) DO UPDATE SET items = excluded.items",
            [(run_id, batch, n, dumps(list(items))) for n, items in pages.items()],
        )

    def append_history(
        self, run_id: str, kind: str, node_id: str | None, data: Any, *, now: float
    ) -> None:
        """Append one event with the run's next sequence number."""
        seq = self.c.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM history WHERE run_id = ?", (run_id,)
        ).fetchone()[0]
        self.c.execute(
            "INSERT INTO history (run_id, seq, at, kind, node_id, data) VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, seq, now, str(kind), node_id, None if data is None else dumps(data)),
        )

    def add_outbox(self, messages: Sequence[OutboxMessage], *, now: float) -> None:
        """Add outbox rows by stable id (``INSERT OR IGNORE``)."""
        self.c.executemany(
            "INSERT OR IGNORE INTO outbox (id, topic, key, value, created_at, headers) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (m.id, m.topic, m.key, dumps(m.value), now, dump_headers(m.headers))
                for m in messages
            ],
        )

    # --- waits and the inbox --------------------------------------------------------------
    def put_wait(self, key: Key, wait: Wait) -> None:
        """Insert or replace the node's wait."""
        self.c.execute(
            "INSERT INTO waits (run_id, node_id, iteration, event, due_at, woken, woke_event_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, node_id, iteration) DO UPDATE SET"
            " event = excluded.event, due_at = excluded.due_at, woken = excluded.woken,"
            " woke_event_id = excluded.woke_event_id",
            (*key, wait.event, wait.due_at, wait.woken, wait.woke_event),
        )

    def end_wait(self, key: Key) -> None:
        """Close the node's wait if it is open."""
        self.c.execute(
            f"UPDATE waits SET woken = ? WHERE {_KEY} AND woken IS NULL",  # noqa: S608
            (_CLOSED, *key),
        )

    def add_event(self, run_id: str, event_id: str, name: str, payload: Any, *, now: float) -> None:
        """Insert a delivered event."""
        self.c.execute(
            "INSERT INTO inbox (run_id, event_id, name, payload, received_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (run_id, event_id, name, dumps(payload), now),
        )

    def consume_event(self, run_id: str, event_id: str, node_id: str, iteration: int) -> None:
        """Mark the event consumed by the node."""
        self.c.execute(
            "UPDATE inbox SET consumed_by = ?, consumed_iteration = ? "
            "WHERE run_id = ? AND event_id = ?",
            (node_id, iteration, run_id, event_id),
        )
