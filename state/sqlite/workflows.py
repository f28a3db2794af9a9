"""The code workflow tables in SQLite (``state.workflows.WorkflowStore``).

Every write is one ``BEGIN IMMEDIATE`` transaction: a commit checks that its
activation follows the last one of the current generation, inserts it, marks
the inbox items it consumed and records progress on the run, all under the
write lock, so of two activations built on the same history exactly one
commits. Reads take a read transaction, so an activation sees one snapshot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from state.codec import dumps, loads
from state.records import RUN_ACTIVE, OutboxMessage
from state.sqlite.connection import Database
from state.sqlite.rows import run_of
from state.sqlite.txn import SQLiteTxn
from state.workflows import WorkflowState, WorkflowTimer

__all__ = ["SCHEMA", "TABLES", "SQLiteWorkflows"]

#: One placeholder per active status (paused included: its timers fire into the inbox).
_ACTIVE_MARKS = ", ".join("?" * len(RUN_ACTIVE))

SCHEMA = """
-- A code workflow run's generation, last dispatched activation and blocked report.
CREATE TABLE IF NOT EXISTS wf_runs (
    run_id TEXT PRIMARY KEY,
    gen INTEGER NOT NULL DEFAULT 0,
    dispatched INTEGER NOT NULL DEFAULT 0,
    blocked TEXT
) WITHOUT ROWID;
-- One row per committed activation: the commit is the insert of n after n - 1.
CREATE TABLE IF NOT EXISTS wf_history (
    run_id TEXT NOT NULL,
    gen INTEGER NOT NULL,
    n INTEGER NOT NULL,
    at REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, gen, n)
) WITHOUT ROWID;
-- What wakes a run, keyed so a redelivered item is the same row; kept (consumed) for dedupe.
CREATE TABLE IF NOT EXISTS wf_inbox (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    item TEXT NOT NULL,
    arrived_at REAL NOT NULL,
    consumed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS wf_inbox_open ON wf_inbox (run_id, seq) WHERE consumed = 0;
-- Durable timers by due time: what the reconciler reads.
CREATE TABLE IF NOT EXISTS wf_timers (
    run_id TEXT NOT NULL,
    gen INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    due_at REAL NOT NULL,
    PRIMARY KEY (run_id, gen, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS wf_timers_due ON wf_timers (due_at);
"""

#: The tables holding a code workflow run's rows (retention deletes them with the run).
TABLES = ("wf_runs", "wf_history", "wf_inbox", "wf_timers")


class SQLiteWorkflows:
    """``WorkflowStore`` on one SQLite file."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        """Use ``db``; stamp writes with ``clock``."""
        self._db = db
        self._clock = clock

    def put_inbox(self, run_id: str, key: str, item: dict[str, Any]) -> bool:
        """Add an item once (a key there already, consumed or not, is left alone)."""
        with SQLiteTxn(self._db) as t:
            seq = t.c.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM wf_inbox WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
            cur = t.c.execute(
                "INSERT OR IGNORE INTO wf_inbox (run_id, key, seq, item, arrived_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (run_id, key, seq, dumps(item), self._clock()),
            )
            return cur.rowcount == 1

    def load(self, run_id: str) -> WorkflowState | None:
        """The run, its generation's history and its open inbox, from one read snapshot."""
        conn = self._db.conn()
        conn.execute("BEGIN")
        try:
            return self._load(conn, run_id)
        finally:
            conn.execute("COMMIT")

    def _load(self, c: sqlite3.Connection, run_id: str) -> WorkflowState | None:
        row = c.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        wf = c.execute(
            "SELECT gen, dispatched, blocked FROM wf_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        gen = wf["gen"] if wf is not None else 0
        history = tuple(
            loads(r["data"])
            for r in c.execute(
                "SELECT data FROM wf_history WHERE run_id = ? AND gen = ? ORDER BY n",
                (run_id, gen),
            )
        )
        inbox = tuple(
            (r["key"], loads(r["item"]))
            for r in c.execute(
                "SELECT key, item FROM wf_inbox WHERE run_id = ? AND consumed = 0 ORDER BY seq",
                (run_id,),
            )
        )
        return WorkflowState(
            run=run_of(row),
            gen=gen,
            history=history,
            inbox=inbox,
            dispatched=wf["dispatched"] if wf is not None else 0,
            blocked=loads(wf["blocked"]) if wf is not None else None,
        )

    def commit(
        self,
        run_id: str,
        *,
        gen: int,
        activation: dict[str, Any],
        consumed: Sequence[str],
        dispatched: bool = False,
    ) -> bool:
        """Insert activation ``n`` if the last of ``gen`` is ``n - 1`` and the run is active."""
        n = int(activation["n"])
        now = self._clock()
        with SQLiteTxn(self._db) as t:
            view = t.run_status(run_id)
            if view is None or view.status not in RUN_ACTIVE:
                return False
            t.c.execute("INSERT OR IGNORE INTO wf_runs (run_id) VALUES (?)", (run_id,))
            current = t.c.execute("SELECT gen FROM wf_runs WHERE run_id = ?", (run_id,)).fetchone()
            last = t.c.execute(
                "SELECT COALESCE(MAX(n), 0) FROM wf_history WHERE run_id = ? AND gen = ?",
                (run_id, gen),
            ).fetchone()[0]
            if current["gen"] != gen or last != n - 1:
                return False
            t.c.execute(
                "INSERT INTO wf_history (run_id, gen, n, at, data) VALUES (?, ?, ?, ?, ?)",
                (run_id, gen, n, float(activation["at"]), dumps(activation)),
            )
            t.c.executemany(
                "UPDATE wf_inbox SET consumed = 1 WHERE run_id = ? AND key = ?",
                [(run_id, k) for k in consumed],
            )
            if dispatched:
                t.c.execute(
                    "UPDATE wf_runs SET dispatched = MAX(dispatched, ?) WHERE run_id = ?",
                    (n, run_id),
                )
            # Progress: a run that commits activations is not stalled.
            t.update_run(run_id, view.status, now=now)
            return True

    def mark_dispatched(self, run_id: str, *, gen: int, n: int) -> None:
        """Raise the dispatched mark to ``n`` (of the current generation)."""
        with SQLiteTxn(self._db) as t:
            t.c.execute("INSERT OR IGNORE INTO wf_runs (run_id) VALUES (?)", (run_id,))
            t.c.execute(
                "UPDATE wf_runs SET dispatched = MAX(dispatched, ?) WHERE run_id = ? AND gen = ?",
                (n, run_id, gen),
            )

    def set_blocked(self, run_id: str, report: dict[str, Any] | None) -> None:
        """Record or clear the blocked report."""
        with SQLiteTxn(self._db) as t:
            t.c.execute("INSERT OR IGNORE INTO wf_runs (run_id) VALUES (?)", (run_id,))
            t.c.execute(
                "UPDATE wf_runs SET blocked = ? WHERE run_id = ?",
                (None if report is None else dumps(report), run_id),
            )

    def set_timers(
        self,
        run_id: str,
        *,
        gen: int,
        put: Sequence[tuple[int, float]] = (),
        delete: Sequence[tuple[int, float]] = (),
    ) -> None:
        """Write and delete timer rows (keyed by run, generation and seq)."""
        if not put and not delete:
            return
        with SQLiteTxn(self._db) as t:
            t.c.executemany(
                "INSERT OR REPLACE INTO wf_timers (run_id, gen, seq, due_at) VALUES (?, ?, ?, ?)",
                [(run_id, gen, seq, due) for seq, due in put],
            )
            t.c.executemany(
                "DELETE FROM wf_timers WHERE run_id = ? AND gen = ? AND seq = ?",
                [(run_id, gen, seq) for seq, _ in delete],
            )

    def due_timers(self, *, now: float, limit: int = 500) -> list[WorkflowTimer]:
        """Due timers of active runs, oldest first, through the due-time index."""
        rows = self._db.read(
            lambda c: c.execute(
                "SELECT t.run_id, t.gen, t.seq, t.due_at FROM wf_timers t "  # noqa: S608 - fixed SQL
                "JOIN runs r ON r.run_id = t.run_id "
                f"WHERE t.due_at <= ? AND r.status IN ({_ACTIVE_MARKS}) "
                "ORDER BY t.due_at LIMIT ?",
                (now, *sorted(str(s) for s in RUN_ACTIVE), limit),
            ).fetchall()
        )
        return [
            WorkflowTimer(run_id=r["run_id"], gen=r["gen"], seq=r["seq"], due_at=r["due_at"])
            for r in rows
        ]

    def next_generation(self, run_id: str, *, gen: int, start: dict[str, Any]) -> bool:
        """Move to ``gen + 1`` once, with its start item; the old generation's timers go."""
        with SQLiteTxn(self._db) as t:
            t.c.execute("INSERT OR IGNORE INTO wf_runs (run_id) VALUES (?)", (run_id,))
            cur = t.c.execute(
                "UPDATE wf_runs SET gen = ?, dispatched = 0 WHERE run_id = ? AND gen = ?",
                (gen + 1, run_id, gen),
            )
            if cur.rowcount != 1:
                return False
            t.c.execute("DELETE FROM wf_timers WHERE run_id = ? AND gen = ?", (run_id, gen))
            seq = t.c.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM wf_inbox WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
            t.c.execute(
                "INSERT OR REPLACE INTO wf_inbox (run_id, key, seq, item, arrived_at, consumed) "
                "VALUES (?, ?, ?, ?, ?, 0)",
                (run_id, str(start["key"]), seq, dumps(start), self._clock()),
            )
            return True

    def add_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        """Add outbox rows by stable id."""
        if messages:
            with SQLiteTxn(self._db) as t:
                t.add_outbox(messages, now=self._clock())

    def finish(self, run_id: str, *, gen: int) -> None:
        """Nothing to do: retention deletes a finished run with all its rows."""
