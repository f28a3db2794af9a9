"""The code workflow tables in memory (``state.workflows.WorkflowStore``), under the database lock.

The same decisions as SQLite's: a commit inserts activation ``n`` only after
``n - 1`` of the current generation, marks what it consumed and records
progress on the run, all while the database lock is held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from state.codec import dumps, loads
from state.memory.database import Database
from state.memory.txn import MemoryTxn, run_of
from state.records import RUN_ACTIVE, OutboxMessage
from state.workflows import WorkflowState, WorkflowTimer

__all__ = ["MemoryWorkflows", "WorkflowRows"]


@dataclass
class WorkflowRows:
    """One run's workflow rows; payloads as JSON text."""

    gen: int = 0
    dispatched: int = 0
    blocked: str | None = None
    #: generation -> activations in order
    history: dict[int, list[str]] = field(default_factory=dict)
    #: key -> (item, consumed); insertion order is arrival order
    inbox: dict[str, tuple[str, bool]] = field(default_factory=dict)
    #: (generation, seq) -> due time
    timers: dict[tuple[int, int], float] = field(default_factory=dict)


class MemoryWorkflows:
    """``WorkflowStore`` on one in-process database."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        """Use ``db``; stamp progress with ``clock``."""
        self._db = db
        self._clock = clock

    def _rows(self, run_id: str) -> WorkflowRows:
        rows: WorkflowRows = self._db.workflows.setdefault(run_id, WorkflowRows())
        return rows

    def put_inbox(self, run_id: str, key: str, item: dict[str, Any]) -> bool:
        """Add an item once (a key there already, consumed or not, is left alone)."""
        text = dumps(item)
        with self._db.lock:
            self._db.check()
            rows = self._rows(run_id)
            if key in rows.inbox:
                return False
            rows.inbox[key] = (text, False)
            return True

    def load(self, run_id: str) -> WorkflowState | None:
        """The run, its generation's history and its open inbox."""
        with self._db.lock:
            self._db.check()
            run = self._db.runs.get(run_id)
            if run is None:
                return None
            rows = self._db.workflows.get(run_id) or WorkflowRows()
            return WorkflowState(
                run=run_of(run),
                gen=rows.gen,
                history=tuple(loads(a) for a in rows.history.get(rows.gen, ())),
                inbox=tuple((k, loads(v)) for k, (v, used) in rows.inbox.items() if not used),
                dispatched=rows.dispatched,
                blocked=loads(rows.blocked),
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
        """Append activation ``n`` if the last of ``gen`` is ``n - 1`` and the run is active."""
        text = dumps(activation)
        with self._db.lock:
            self._db.check()
            run = self._db.runs.get(run_id)
            if run is None or run.status not in RUN_ACTIVE:
                return False
            rows = self._rows(run_id)
            acts = rows.history.setdefault(gen, [])
            if rows.gen != gen or len(acts) != int(activation["n"]) - 1:
                return False
            acts.append(text)
            for key in consumed:
                if key in rows.inbox:
                    rows.inbox[key] = (rows.inbox[key][0], True)
            if dispatched:
                rows.dispatched = max(rows.dispatched, int(activation["n"]))
            # Progress: a run that commits activations is not stalled.
            self._db.runs[run_id] = replace(run, updated_at=self._clock())
            return True

    def mark_dispatched(self, run_id: str, *, gen: int, n: int) -> None:
        """Raise the dispatched mark to ``n`` (of the current generation)."""
        with self._db.lock:
            rows = self._rows(run_id)
            if rows.gen == gen:
                rows.dispatched = max(rows.dispatched, n)

    def set_blocked(self, run_id: str, report: dict[str, Any] | None) -> None:
        """Record or clear the blocked report."""
        with self._db.lock:
            self._rows(run_id).blocked = None if report is None else dumps(report)

    def set_timers(
        self,
        run_id: str,
        *,
        gen: int,
        put: Sequence[tuple[int, float]] = (),
        delete: Sequence[tuple[int, float]] = (),
    ) -> None:
        """Write and delete timers (keyed by generation and seq)."""
        with self._db.lock:
            timers = self._rows(run_id).timers
            for seq, due in put:
                timers[(gen, seq)] = due
            for seq, _ in delete:
                timers.pop((gen, seq), None)

    def due_timers(self, *, now: float, limit: int = 500) -> list[WorkflowTimer]:
        """Due timers of active runs, oldest first."""
        with self._db.lock:
            due = [
                WorkflowTimer(run_id=run_id, gen=gen, seq=seq, due_at=at)
                for run_id, rows in self._db.workflows.items()
                if (run := self._db.runs.get(run_id)) is not None and run.status in RUN_ACTIVE
                for (gen, seq), at in rows.timers.items()
                if at <= now
            ]
        return sorted(due, key=lambda t: t.due_at)[:limit]

    def next_generation(self, run_id: str, *, gen: int, start: dict[str, Any]) -> bool:
        """Move to ``gen + 1`` once, with its start item; the old generation's timers go."""
        with self._db.lock:
            rows = self._rows(run_id)
            if rows.gen != gen:
                return False
            rows.gen, rows.dispatched = gen + 1, 0
            rows.timers = {k: v for k, v in rows.timers.items() if k[0] != gen}
            rows.inbox[str(start["key"])] = (dumps(start), False)
            return True

    def add_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        """Add outbox rows by stable id."""
        with self._db.lock:
            MemoryTxn(self._db).add_outbox(messages, now=self._clock())

    def finish(self, run_id: str, *, gen: int) -> None:
        """Nothing to do: retention deletes a finished run with all its rows."""
