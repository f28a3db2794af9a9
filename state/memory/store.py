"""``MemoryStore``: a real ``StateStore`` in this process's memory (``memory://NAME``).

For tests and ``flowbridge.testing``: the same rules and the same transactional
operations as SQLite, on dicts under one lock per database, with an
injectable clock (a virtual one makes a day-long timer due at once). It passes
the whole contract suite except what needs several processes.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from state.codec import loads
from state.constants import DEFAULT_RETENTION_S
from state.errors import ConfigError
from state.keys import bucket_of, outbox_shard
from state.memory.database import Database, database
from state.memory.txn import MemoryTxn, node_of, run_of
from state.memory.workflows import MemoryWorkflows
from state.records import (
    RUN_ACTIVE,
    DueTimer,
    HistoryEvent,
    NodeState,
    NodeStatus,
    OutboxMessage,
    Run,
    SchemaChange,
    WakeKind,
    Wakeup,
)
from state.rules import waits
from state.transactional import TransactionalStore, Txn

__all__ = ["MemoryStore", "open_url"]


class MemoryStore(TransactionalStore):
    """A ``StateStore`` on a named in-process database, thread-safe, shared by name."""

    #: The database is created by ``migrate``, which every process runs itself.
    auto_migrate = True
    #: The run's end goes in the last node's commit transaction.
    commits_run_end = True

    def __init__(
        self,
        name: str = "",
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Use the database called ``name`` (stores of one process with that name share it)."""
        self.name = name
        self._db: Database = database(name)
        super().__init__(begin=self._transaction, clock=clock, retention_s=retention_s)
        #: The code workflow tables.
        self.workflows = MemoryWorkflows(self._db, clock)

    def __repr__(self) -> str:
        return f"MemoryStore({self.name!r})"

    @contextmanager
    def _transaction(self) -> Iterator[Txn]:
        with self._db.lock:
            self._db.check()
            txn = MemoryTxn(self._db)
            try:
                yield txn
            except BaseException:
                txn.rollback()
                raise

    @contextmanager
    def _locked(self) -> Iterator[Database]:
        with self._db.lock:
            self._db.check()
            yield self._db

    # --- lifecycle ------------------------------------------------------------------------
    def migrate(self) -> SchemaChange:
        """Create the database's schema (idempotent; a newer one is refused); what it did."""
        return self._db.migrate()

    def close(self) -> None:
        """Nothing to release: the data stays with its name."""

    # --- runs -----------------------------------------------------------------------------
    def get_run(self, run_id: str, *, snapshot: bool = True) -> Run | None:
        """Read one run that has not expired."""
        with self._locked() as db:
            row = db.runs.get(run_id)
            if row is None or (row.expires_at is not None and row.expires_at <= self._clock()):
                return None
            return run_of(row if snapshot else replace(row, snapshot="{}"))

    def get_run_and_node(
        self, run_id: str, node_id: str, iteration: int = 0, *, snapshot: bool = True
    ) -> tuple[Run | None, NodeState | None]:
        """The run and one node record (two reads: each is a local lookup here)."""
        return self.get_run(run_id, snapshot=snapshot), self.get_node(run_id, node_id, iteration)

    def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[Run]:
        """Recent runs: newest created first, or for one status, latest progress first."""
        with self._locked() as db:
            if status is None:
                rows = sorted(db.runs.values(), key=lambda r: r.created_at, reverse=True)
            else:
                rows = [r for r in db.runs.values() if r.status == status]
                rows.sort(key=lambda r: r.updated_at, reverse=True)
            return [run_of(r) for r in rows[:limit]]

    def find_stalled(self, *, status: str, older_than: float, limit: int = 100) -> list[str]:
        """Run ids in ``status`` whose last progress is before ``older_than``, oldest first."""
        with self._locked() as db:
            rows = [r for r in db.runs.values() if r.status == status and r.updated_at < older_than]
            rows.sort(key=lambda r: (bucket_of(r.updated_at), r.run_id))
            return [r.run_id for r in rows[:limit]]

    def purge_expired(self, *, limit: int = 1000) -> int:
        """Delete finished runs past their retention, with all their rows; returns how many."""
        now = self._clock()
        with self._locked() as db:
            expired = [
                r.run_id
                for r in db.runs.values()
                if r.expires_at is not None and r.expires_at <= now
            ][:limit]
            for run_id in expired:
                db.forget(run_id)
            return len(expired)

    # --- nodes, context, history ----------------------------------------------------------
    def get_node(self, run_id: str, node_id: str, iteration: int = 0) -> NodeState | None:
        """Read one node record."""
        with self._locked() as db:
            row = db.nodes.get(run_id, {}).get((node_id, iteration))
            return None if row is None else node_of(row)

    def get_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0
    ) -> dict[str, NodeState]:
        """Read the existing records among ``node_ids``."""
        with self._locked() as db:
            table = db.nodes.get(run_id, {})
            rows = (table.get((n, iteration)) for n in dict.fromkeys(node_ids))
            return {r.node_id: node_of(r) for r in rows if r is not None}

    def get_batch(self, run_id: str, batch: str, pages: Sequence[int]) -> dict[int, list[Any]]:
        """Read pages of a batch."""
        with self._locked() as db:
            table = db.batches.get(run_id, {})
            found = {n: table.get((batch, n)) for n in dict.fromkeys(pages)}
            return {n: loads(text) for n, text in found.items() if text is not None}

    def get_arrivals(self, run_id: str, join_id: str, iteration: int = 0) -> dict[str, str]:
        """Read a join's arrival set."""
        with self._locked() as db:
            return dict(db.arrivals.get((run_id, join_id, iteration), {}))

    def get_context(self, run_id: str) -> dict[str, Any]:
        """Read the run context."""
        with self._locked() as db:
            return {k: loads(v) for k, (v, _) in db.context.get(run_id, {}).items()}

    def get_history(self, run_id: str) -> list[HistoryEvent]:
        """Read the history in commit order."""
        with self._locked() as db:
            return [
                HistoryEvent(
                    run_id=run_id,
                    seq=e.seq,
                    at=e.at,
                    kind=e.kind,
                    node_id=e.node_id,
                    data=loads(e.data),
                )
                for e in db.history.get(run_id, [])
            ]

    # --- waiting --------------------------------------------------------------------------
    def get_wakeup(self, run_id: str, node_id: str, iteration: int = 0) -> Wakeup | None:
        """What woke the node, if anything did."""
        with self._locked() as db:
            wait = db.waits.get(run_id, {}).get((node_id, iteration))
            if wait is None or wait.woken != WakeKind.EVENT or wait.woke_event is None:
                return waits.wakeup_of(wait)
            ev = db.inbox.get(run_id, {}).get(wait.woke_event)
            return waits.wakeup_of(wait, None if ev is None else loads(ev.payload))

    def due_timers(self, *, now: float, limit: int = 500) -> list[DueTimer]:
        """Unfired timers due by ``now`` of waiting nodes of active runs, oldest first."""
        with self._locked() as db:
            due: list[DueTimer] = []
            for run_id, table in db.waits.items():
                run = db.runs.get(run_id)
                if run is None or run.status not in RUN_ACTIVE:
                    continue
                for (node_id, iteration), w in table.items():
                    node = db.nodes.get(run_id, {}).get((node_id, iteration))
                    if w.woken is not None or w.due_at is None or w.due_at > now:
                        continue
                    if node is not None and node.status == NodeStatus.WAITING:
                        due.append(
                            DueTimer(
                                run_id=run_id, node_id=node_id, iteration=iteration, due_at=w.due_at
                            )
                        )
            due.sort(key=lambda t: t.due_at)
            return due[:limit]

    # --- outbox ---------------------------------------------------------------------------
    def pending_outbox(
        self, *, limit: int = 500, shards: Collection[int] | None = None
    ) -> list[OutboxMessage]:
        """Unpublished outbox rows, oldest first (of ``shards`` when given)."""
        with self._locked() as db:
            rows = (m for m in db.outbox.values() if shards is None or outbox_shard(m.id) in shards)
            return [
                OutboxMessage(
                    id=m.id,
                    topic=m.topic,
                    key=m.key,
                    value=loads(m.value),
                    created_at=m.created_at,
                    headers=m.headers,
                )
                for m in itertools.islice(rows, limit)
            ]

    def delete_outbox(self, ids: Sequence[str]) -> None:
        """Forget published outbox rows."""
        with self._locked() as db:
            for i in ids:
                db.outbox.pop(i, None)


def open_url(
    url: str,
    *,
    env: Mapping[str, str],
    retention_s: float | None,
    clock: Callable[[], float] | None,
) -> MemoryStore:
    """Open ``memory://NAME`` (the registry's opener): the database of that name in this process."""
    name = url.partition("://")[2]
    if "?" in name or "#" in name:
        raise ConfigError(f"FLOWBRIDGE_STATE_URL={url!r}: a memory URL takes no options")
    return MemoryStore(
        name,
        retention_s=DEFAULT_RETENTION_S if retention_s is None else retention_s,
        clock=time.time if clock is None else clock,
    )
