"""The SQLite store's waiting runs: waits, timers, the event inbox, fences, reconciliation claims.

Each operation is one ``BEGIN IMMEDIATE`` transaction, so a timer and an event
racing for one wait, two reconcilers claiming one stall, or a suspend and a
delivery arriving together are serialised by SQLite's write lock: exactly one
of them applies.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from state.constants import (
    NODE_PENDING,
    NODE_RUNNING,
    NODE_WAITING,
    RUN_ACTIVE,
    RUN_RUNNING,
    RUN_TERMINAL,
    RUN_WAITING,
)
from state.models import Delivery, DueTimer, OutboxMessage, Wakeup
from state.sqlite_base import SQLiteBase, _dumps, _loads

__all__ = ["SQLiteWaitsMixin"]


class SQLiteWaitsMixin(SQLiteBase):
    """Waits, timers and the event inbox; fences and stall claims (a mixin on ``SQLiteBase``)."""

    # --- waiting: timers and events -----------------------------------
    def _wake_run(self, c: sqlite3.Connection, run_id: str, now: float) -> None:
        """A node of the run is pending again: a waiting run is running."""
        row = c.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is not None and row["status"] == RUN_WAITING:
            self._move_run(c, run_id, RUN_RUNNING, now)
            self._history(c, run_id, "run.running", None, None, now)
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
                "JOIN runs r ON r.run_id = w.run_id "
                "WHERE w.run_id = ? AND w.node_id = ? AND w.iteration = ? AND w.woken IS NULL "
                "AND n.status = ? AND r.status IN (?, ?, ?)",
                (*key, NODE_WAITING, *sorted(RUN_ACTIVE)),
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
                # waits_due is the index; the node and run rows confirm each of its rows.
                "SELECT w.run_id, w.node_id, w.iteration, w.due_at FROM waits w "
                "JOIN nodes n ON n.run_id = w.run_id AND n.node_id = w.node_id "
                "AND n.iteration = w.iteration JOIN runs r ON r.run_id = w.run_id "
                "WHERE w.woken IS NULL AND w.due_at IS NOT NULL AND w.due_at <= ? "
                "AND n.status = ? AND r.status IN (?, ?, ?) "
                "ORDER BY w.due_at LIMIT ?",
                (now, NODE_WAITING, *sorted(RUN_ACTIVE), limit),
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
