"""The memory store's data: named databases shared by every store of one process.

``memory://NAME`` names a database: stores opened with the same name in one
process (a runtime and a client, say) see the same runs. A database lives
until ``drop`` (or the process ends); nothing crosses a fork or another process.

Payloads are kept as JSON text, exactly as SQLite stores them: a value read
back is a fresh decoded object (tuples become lists), and a value that is not
JSON fails the write that carries it, not a later read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from state.constants import SCHEMA_VERSION
from state.errors import SchemaError
from state.records import SchemaChange
from state.rules import Wait

__all__ = [
    "Database",
    "EventRow",
    "HistoryRow",
    "NodeRow",
    "OutboxRow",
    "RunRow",
    "database",
    "drop",
]


@dataclass(frozen=True, kw_only=True)
class RunRow:
    """A run; ``input``, ``snapshot`` and ``output`` as JSON text."""

    run_id: str
    blueprint_id: str
    version: str
    status: str
    input: str
    snapshot: str
    output: str | None
    error: str | None
    fence: int
    created_at: float
    updated_at: float
    reconciled_at: float | None = None
    expires_at: float | None = None
    attempt: int = 1
    #: JSON text of the parent node link, or None.
    parent: str | None = None


@dataclass(frozen=True, kw_only=True)
class NodeRow:
    """A node record; ``output`` as JSON text."""

    run_id: str
    node_id: str
    iteration: int
    status: str
    attempts: int = 0
    deliveries: int = 0
    output: str | None = None
    action: str | None = None
    edges_taken: tuple[str, ...] = ()
    error: str | None = None
    updated_at: float = 0.0
    claimed_by: str | None = None
    lease_until: float | None = None


@dataclass(frozen=True, kw_only=True)
class EventRow:
    """An event in a run's inbox; ``payload`` as JSON text, ``seq`` its arrival order."""

    event_id: str
    name: str
    payload: str
    received_at: float
    seq: int
    consumed_by: str | None = None
    consumed_iteration: int | None = None


@dataclass(frozen=True, kw_only=True)
class HistoryRow:
    """A history event; ``data`` as JSON text (None: no data)."""

    seq: int
    at: float
    kind: str
    node_id: str | None
    data: str | None


@dataclass(frozen=True, kw_only=True)
class OutboxRow:
    """An outbox row; ``value`` as JSON text."""

    id: str
    topic: str
    key: str | None
    value: str
    created_at: float
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(eq=False)
class Database:
    """One named database: its tables, its schema version and the lock every operation holds."""

    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: None until ``migrate`` creates the schema (as a fresh SQLite file or keyspace).
    version: int | None = None
    runs: dict[str, RunRow] = field(default_factory=dict)
    #: run id -> (node id, iteration) -> record
    nodes: dict[str, dict[tuple[str, int], NodeRow]] = field(default_factory=dict)
    #: (run id, join id, iteration) -> predecessor -> outcome
    arrivals: dict[tuple[str, str, int], dict[str, str]] = field(default_factory=dict)
    #: run id -> key -> (JSON text, written at)
    context: dict[str, dict[str, tuple[str, float]]] = field(default_factory=dict)
    history: dict[str, list[HistoryRow]] = field(default_factory=dict)
    #: run id -> (node id, iteration) -> wait
    waits: dict[str, dict[tuple[str, int], Wait]] = field(default_factory=dict)
    #: run id -> event id -> event
    inbox: dict[str, dict[str, EventRow]] = field(default_factory=dict)
    #: Insertion-ordered: the relay publishes oldest first.
    outbox: dict[str, OutboxRow] = field(default_factory=dict)
    #: run id -> (batch, page) -> JSON text of the page's items
    batches: dict[str, dict[tuple[str, int], str]] = field(default_factory=dict)
    #: Arrival order of inbox events (ties of ``received_at`` under a virtual clock).
    event_seq: int = 0
    #: run id -> the code workflow rows of that run (``state.memory.workflows``)
    workflows: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Refuse to work on a database whose schema was never created."""
        if self.version is None:
            raise SchemaError(f"memory store {self.name!r} has no schema: run `flowbridge migrate`")

    def migrate(self) -> SchemaChange:
        """Create the schema, or refuse a newer one (a version set by a test of that refusal)."""
        with self.lock:
            before = self.version
            if self.version is not None and self.version > SCHEMA_VERSION:
                raise SchemaError(
                    f"memory store {self.name!r} has schema {self.version}, newer than this "
                    f"flowbridge ({SCHEMA_VERSION}): upgrade flowbridge"
                )
            self.version = SCHEMA_VERSION
            return SchemaChange(before=before, after=SCHEMA_VERSION)

    def forget(self, run_id: str) -> None:
        """Delete every row of one run (retention)."""
        self.runs.pop(run_id, None)
        self.nodes.pop(run_id, None)
        self.context.pop(run_id, None)
        self.history.pop(run_id, None)
        self.waits.pop(run_id, None)
        self.inbox.pop(run_id, None)
        self.workflows.pop(run_id, None)
        self.batches.pop(run_id, None)
        for key in [k for k in self.arrivals if k[0] == run_id]:
            del self.arrivals[key]


_databases: dict[str, Database] = {}
_registry_lock = threading.Lock()


def database(name: str) -> Database:
    """The database called ``name`` in this process (created empty, without a schema)."""
    with _registry_lock:
        db = _databases.get(name)
        if db is None:
            db = _databases[name] = Database(name=name)
        return db


def drop(name: str) -> None:
    """Forget the database called ``name`` (stores still holding it keep their copy)."""
    with _registry_lock:
        _databases.pop(name, None)
