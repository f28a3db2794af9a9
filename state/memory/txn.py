"""The primitives of one memory transaction (``state.transactional.Txn``), on dicts.

The database lock is held for the whole transaction. Every write logs its
inverse, so a transaction that raises (a value that is not JSON, a stale
fence found after a write) leaves the database as it found it, as a rolled
back SQLite transaction does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from state.codec import dumps, loads
from state.memory.database import Database, EventRow, HistoryRow, NodeRow, OutboxRow, RunRow
from state.records import NODE_ACTIVE, Arrival, NodeState, NodeStatus, OutboxMessage, Run
from state.rules import KEEP, RunView, Wait
from state.rules.waits import InboxEvent
from state.transactional import Key, NodeField

__all__ = ["MemoryTxn", "node_of", "run_of"]

K = TypeVar("K")
V = TypeVar("V")

#: How a wait that ended without waking is marked (as SQLite marks it).
_CLOSED, _CANCELLED = "closed", "cancelled"


def run_of(row: RunRow) -> Run:
    """A stored run as a record (its JSON decoded afresh)."""
    return Run(
        run_id=row.run_id,
        blueprint_id=row.blueprint_id,
        version=row.version,
        status=row.status,
        input=loads(row.input),
        snapshot=loads(row.snapshot),
        output=loads(row.output),
        error=row.error,
        fence=row.fence,
        created_at=row.created_at,
        updated_at=row.updated_at,
        attempt=row.attempt,
        parent=None if row.parent is None else loads(row.parent),
    )


def node_of(row: NodeRow) -> NodeState:
    """A stored node record as a record."""
    return NodeState(
        run_id=row.run_id,
        node_id=row.node_id,
        iteration=row.iteration,
        status=row.status,
        attempts=row.attempts,
        deliveries=row.deliveries,
        output=loads(row.output),
        action=row.action,
        edges_taken=row.edges_taken,
        error=row.error,
        updated_at=row.updated_at,
        claimed_by=row.claimed_by,
        lease_until=row.lease_until,
    )


class MemoryTxn:
    """Reads and writes on one database while its lock is held, with an undo log."""

    def __init__(self, db: Database) -> None:
        """Work on ``db`` (the caller holds ``db.lock``)."""
        self.db = db
        self._undo: list[Callable[[], object]] = []

    def rollback(self) -> None:
        """Undo every write of this transaction, newest first."""
        while self._undo:
            self._undo.pop()()

    def _put(self, table: MutableMapping[K, V], key: K, value: V) -> None:
        if key in table:
            old = table[key]
            self._undo.append(lambda: table.__setitem__(key, old))
        else:
            self._undo.append(lambda: table.pop(key, None))
        table[key] = value

    # --- reads ----------------------------------------------------------------------------
    def run(self, run_id: str) -> Run | None:
        """The whole run record."""
        row = self.db.runs.get(run_id)
        return None if row is None else run_of(row)

    def run_view(self, run_id: str) -> RunView | None:
        """Status, fence, last progress and last stall claim of a run."""
        row = self.db.runs.get(run_id)
        if row is None:
            return None
        return RunView(
            run_id=run_id,
            status=row.status,
            fence=row.fence,
            progress_at=row.updated_at,
            reconciled_at=row.reconciled_at,
            attempt=row.attempt,
        )

    def run_status(self, run_id: str) -> RunView | None:
        """The run's status, as a view."""
        row = self.db.runs.get(run_id)
        return None if row is None else RunView(run_id=run_id, status=row.status)

    def node(self, key: Key) -> NodeState | None:
        """One node record."""
        row = self.db.nodes.get(key[0], {}).get(key[1:])
        return None if row is None else node_of(row)

    def wait(self, key: Key) -> Wait | None:
        """The node's wait."""
        return self.db.waits.get(key[0], {}).get(key[1:])

    def parked(self, key: Key) -> tuple[NodeState, Wait, str] | None:
        """The wait with its node's status and its run's status."""
        wait, node, run = self.wait(key), self.node(key), self.db.runs.get(key[0])
        if wait is None or node is None or run is None:
            return None
        return node, wait, run.status

    def waiter(self, run_id: str, name: str) -> tuple[NodeState, Wait] | None:
        """The node waiting longest for ``name``."""
        found: list[tuple[NodeState, Wait]] = []
        for (node_id, iteration), wait in self.db.waits.get(run_id, {}).items():
            if wait.event != name or wait.woken is not None:
                continue
            node = self.node((run_id, node_id, iteration))
            if node is not None and node.status == NodeStatus.WAITING:
                found.append((node, wait))
        if not found:
            return None
        return min(found, key=lambda nw: (nw[0].updated_at, nw[0].node_id, nw[0].iteration))

    def busy(self, run_id: str) -> bool:
        """Whether a node of the run is pending or running."""
        busy = (NodeStatus.PENDING, NodeStatus.RUNNING)
        return any(n.status in busy for n in self.db.nodes.get(run_id, {}).values())

    def oldest_event(self, run_id: str, name: str) -> InboxEvent | None:
        """The oldest unconsumed event named ``name``."""
        free = [
            e
            for e in self.db.inbox.get(run_id, {}).values()
            if e.name == name and e.consumed_by is None
        ]
        if not free:
            return None
        ev = min(free, key=lambda e: (e.received_at, e.seq))
        return InboxEvent(event_id=ev.event_id, name=ev.name, payload=loads(ev.payload))

    def seen(self, run_id: str, event_id: str) -> bool:
        """Whether the inbox has that event id."""
        return event_id in self.db.inbox.get(run_id, {})

    # --- runs -----------------------------------------------------------------------------
    def insert_run(self, run: Run, *, now: float, expires_at: float | None) -> None:
        """Insert the run."""
        row = RunRow(
            run_id=run.run_id,
            blueprint_id=run.blueprint_id,
            version=run.version,
            status=run.status,
            input=dumps(run.input),
            snapshot=dumps(run.snapshot),
            output=dumps(run.output) if run.output is not None else None,
            error=run.error,
            fence=run.fence,
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
            parent=None if run.parent is None else dumps(run.parent),
        )
        self._put(self.db.runs, run.run_id, row)

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
        """Set status and columns; ``updated_at`` is the progress the index reads."""
        row = self.db.runs.get(run_id)
        if row is None:
            return
        row = replace(row, status=status, updated_at=now)
        if output is not KEEP:
            row = replace(row, output=dumps(output) if output is not None else None)
        if error is not KEEP:
            row = replace(row, error=error)
        if expires_at is not None:
            row = replace(row, expires_at=expires_at)
        if reconciled_at is not None:
            row = replace(row, reconciled_at=reconciled_at)
        self._put(self.db.runs, run_id, row)

    def set_fence(self, run_id: str, fence: int) -> None:
        """Set the run's fence."""
        row = self.db.runs.get(run_id)
        if row is not None:
            self._put(self.db.runs, run_id, replace(row, fence=fence))

    def end_waits(self, run_id: str, *, cancelled: bool) -> None:
        """End the run's open waits."""
        waits = self.db.waits.get(run_id, {})
        for key, wait in list(waits.items()):
            if wait.woken is None:
                self._put(waits, key, wait._replace(woken=_CANCELLED if cancelled else _CLOSED))

    def delete_run(self, run_id: str) -> None:
        """Delete the run's row."""
        if run_id in self.db.runs:
            self._drop(self.db.runs, run_id)

    def set_attempt(self, run_id: str, attempt: int) -> None:
        """Set the run's attempt."""
        row = self.db.runs.get(run_id)
        if row is not None:
            self._put(self.db.runs, run_id, replace(row, attempt=attempt))

    def revive(self, run_id: str) -> None:
        """Clear the run's retention expiry."""
        row = self.db.runs.get(run_id)
        if row is not None:
            self._put(self.db.runs, run_id, replace(row, expires_at=None))

    def reset_nodes(self, run_id: str, node_ids: Sequence[str], iteration: int) -> None:
        """Delete the node records, their waits and the arrivals they made."""
        nodes, waits = self.db.nodes.get(run_id, {}), self.db.waits.get(run_id, {})
        gone = set(node_ids)
        for node_id in node_ids:
            if (node_id, iteration) in nodes:
                self._drop(nodes, (node_id, iteration))
            if (node_id, iteration) in waits:
                self._drop(waits, (node_id, iteration))
        for (rid, _, it), joined in self.db.arrivals.items():
            if rid == run_id and it == iteration:
                for pred in [p for p in joined if p in gone]:
                    self._drop(joined, pred)

    def _drop(self, table: MutableMapping[K, V], key: K) -> None:
        old = table.pop(key)
        self._undo.append(lambda: table.__setitem__(key, old))

    # --- nodes ----------------------------------------------------------------------------
    def insert_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int, status: str, *, now: float
    ) -> None:
        """Create the node records that do not exist."""
        for node_id in node_ids:
            self._create(
                NodeRow(
                    run_id=run_id,
                    node_id=node_id,
                    iteration=iteration,
                    status=status,
                    updated_at=now,
                )
            )

    def create_node(self, node: NodeState) -> bool:
        """Create one record if there is none."""
        return self._create(
            NodeRow(
                run_id=node.run_id,
                node_id=node.node_id,
                iteration=node.iteration,
                status=node.status,
                updated_at=node.updated_at,
            )
        )

    def _create(self, row: NodeRow) -> bool:
        table = self.db.nodes.setdefault(row.run_id, {})
        if (row.node_id, row.iteration) in table:
            return False
        self._put(table, (row.node_id, row.iteration), row)
        return True

    def update_node(
        self, node: NodeState, fields: Sequence[NodeField], *, if_active: bool = False
    ) -> bool:
        """Write ``fields`` of ``node`` to its record (with ``if_active``: only an active one)."""
        table = self.db.nodes.get(node.run_id, {})
        row = table.get((node.node_id, node.iteration))
        if row is None or (if_active and row.status not in NODE_ACTIVE):
            return False
        values: dict[str, Any] = {f: getattr(node, f) for f in fields}
        if "output" in values:
            values["output"] = dumps(node.output)
        if "edges_taken" in values:
            values["edges_taken"] = tuple(node.edges_taken)
        self._put(table, (node.node_id, node.iteration), replace(row, **values))
        return True

    def cancel_active_nodes(self, run_id: str, *, reason: str, now: float) -> None:
        """Cancel the run's active node records."""
        table = self.db.nodes.get(run_id, {})
        for key, row in list(table.items()):
            if row.status in NODE_ACTIVE:
                cancelled = replace(row, status=NodeStatus.CANCELLED, error=reason, updated_at=now)
                self._put(table, key, cancelled)

    def arrive(self, run_id: str, iteration: int, arrivals: Sequence[Arrival]) -> None:
        """Add arrivals (a predecessor's first arrival is kept)."""
        for a in arrivals:
            joined = self.db.arrivals.setdefault((run_id, a.join_id, iteration), {})
            if a.predecessor not in joined:
                self._put(joined, a.predecessor, a.outcome)

    # --- context, history, outbox ---------------------------------------------------------
    def set_context(self, run_id: str, values: Mapping[str, Any], *, now: float) -> None:
        """Write context keys (last write wins)."""
        table = self.db.context.setdefault(run_id, {})
        for k, v in values.items():
            self._put(table, k, (dumps(v), now))

    def delete_context(self, run_id: str, keys: Sequence[str]) -> None:
        """Delete context keys."""
        table = self.db.context.setdefault(run_id, {})
        for k in keys:
            if k in table:
                self._undo.append(functools.partial(table.__setitem__, k, table.pop(k)))

    def put_batch(self, run_id: str, batch: str, pages: Mapping[int, Sequence[Any]]) -> None:
        """Upsert pages of a batch."""
        table = self.db.batches.setdefault(run_id, {})
        for n, items in pages.items():
            self._put(table, (batch, n), dumps(list(items)))

    def append_history(
        self, run_id: str, kind: str, node_id: str | None, data: Any, *, now: float
    ) -> None:
        """Append one event with the run's next sequence number."""
        events = self.db.history.setdefault(run_id, [])
        text = None if data is None else dumps(data)
        events.append(
            HistoryRow(seq=len(events) + 1, at=now, kind=kind, node_id=node_id, data=text)
        )
        self._undo.append(events.pop)

    def add_outbox(self, messages: Sequence[OutboxMessage], *, now: float) -> None:
        """Add outbox rows by stable id (an id already there is left alone)."""
        for m in messages:
            if m.id not in self.db.outbox:
                row = OutboxRow(
                    id=m.id,
                    topic=m.topic,
                    key=m.key,
                    value=dumps(m.value),
                    created_at=now,
                    headers=tuple(m.headers),
                )
                self._put(self.db.outbox, m.id, row)

    # --- waits and the inbox --------------------------------------------------------------
    def put_wait(self, key: Key, wait: Wait) -> None:
        """Insert or replace the node's wait."""
        self._put(self.db.waits.setdefault(key[0], {}), key[1:], wait)

    def end_wait(self, key: Key) -> None:
        """Close the node's wait if it is open."""
        wait = self.wait(key)
        if wait is not None and wait.woken is None:
            self.put_wait(key, wait._replace(woken=_CLOSED))

    def add_event(self, run_id: str, event_id: str, name: str, payload: Any, *, now: float) -> None:
        """Put a delivered event into the run's inbox."""
        self.db.event_seq += 1
        row = EventRow(
            event_id=event_id,
            name=name,
            payload=dumps(payload),
            received_at=now,
            seq=self.db.event_seq,
        )
        self._put(self.db.inbox.setdefault(run_id, {}), event_id, row)

    def consume_event(self, run_id: str, event_id: str, node_id: str, iteration: int) -> None:
        """Mark the event consumed by the node."""
        table = self.db.inbox.get(run_id, {})
        row = table.get(event_id)
        if row is not None:
            self._put(
                table, event_id, replace(row, consumed_by=node_id, consumed_iteration=iteration)
            )
