"""The primitives a transactional backend provides: reads and writes inside one transaction.

Every primitive runs inside the transaction ``TransactionalStore`` opened
(SQLite: ``BEGIN IMMEDIATE``; memory: the database lock), so what an operation
reads is still true when it writes. Primitives store and fetch; they never
decide: deciding is ``state.rules``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from state.records import Arrival, NodeState, OutboxMessage, Run
from state.rules import KEEP, RunView, Wait
from state.rules.waits import InboxEvent

__all__ = ["Key", "NodeField", "Txn"]

#: A node record key: (run id, node id, iteration).
Key = tuple[str, str, int]

#: Node record columns an update may set (``NodeState`` field names).
NodeField = Literal[
    "status",
    "attempts",
    "deliveries",
    "output",
    "action",
    "edges_taken",
    "error",
    "updated_at",
    "claimed_by",
    "lease_until",
]


class Txn(Protocol):
    """One transaction's reads and writes."""

    # --- reads ----------------------------------------------------------------------------
    def run(self, run_id: str) -> Run | None:
        """The whole run record (its snapshot decoded)."""

    def run_view(self, run_id: str) -> RunView | None:
        """What the run rules read: status, fence, last progress, last stall claim."""

    def run_status(self, run_id: str) -> RunView | None:
        """The run's status alone (the cheap read most operations need), as a view."""

    def node(self, key: Key) -> NodeState | None:
        """One node record."""

    def wait(self, key: Key) -> Wait | None:
        """The node's wait, if it ever parked."""

    def parked(self, key: Key) -> tuple[NodeState, Wait, str] | None:
        """A node's key and status, its wait and its run's status; None if any is missing."""

    def waiter(self, run_id: str, name: str) -> tuple[NodeState, Wait] | None:
        """The node parked longest waiting for ``name`` (its key and status) with its wait."""

    def busy(self, run_id: str) -> bool:
        """Whether a node of the run is pending or running."""

    def oldest_event(self, run_id: str, name: str) -> InboxEvent | None:
        """The run's oldest unconsumed event named ``name``."""

    def seen(self, run_id: str, event_id: str) -> bool:
        """Whether the run's inbox has an event with that id (consumed or not)."""

    # --- runs -----------------------------------------------------------------------------
    def insert_run(self, run: Run, *, now: float, expires_at: float | None) -> None:
        """Insert a run row and its status-index entry."""

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
        """Set the run's status (the same one: progress) and columns; move its index entry."""

    def set_fence(self, run_id: str, fence: int) -> None:
        """Set the run's fence (not progress)."""

    def end_waits(self, run_id: str, *, cancelled: bool) -> None:
        """A finished run's waits can never wake anything: end them all."""

    def delete_run(self, run_id: str) -> None:
        """Delete the run's row and its status-index entry (its history stays)."""

    def set_attempt(self, run_id: str, attempt: int) -> None:
        """Set the run's attempt (a retry)."""

    def revive(self, run_id: str) -> None:
        """A finished run lives again: clear its retention expiry."""

    def reset_nodes(self, run_id: str, node_ids: Sequence[str], iteration: int) -> None:
        """Delete node records with their waits and the arrivals they made (a retry)."""

    # --- nodes ----------------------------------------------------------------------------
    def insert_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int, status: str, *, now: float
    ) -> None:
        """Create node records that do not exist yet (existing ones are left alone)."""

    def create_node(self, node: NodeState) -> bool:
        """Create one node record if it does not exist; True if this call created it."""

    def update_node(
        self, node: NodeState, fields: Sequence[NodeField], *, if_active: bool = False
    ) -> bool:
        """Write ``fields`` of ``node`` to its record (``if_active``: only an active one)."""

    def cancel_active_nodes(self, run_id: str, *, reason: str, now: float) -> None:
        """Cancel every active node record of the run."""

    def arrive(self, run_id: str, iteration: int, arrivals: Sequence[Arrival]) -> None:
        """Add arrivals to join sets (a predecessor's first arrival is the one kept)."""

    # --- context, history, outbox ---------------------------------------------------------
    def set_context(self, run_id: str, values: Mapping[str, Any], *, now: float) -> None:
        """Write context keys (last write wins)."""

    def delete_context(self, run_id: str, keys: Sequence[str]) -> None:
        """Delete context keys (a key that is not there is left alone)."""

    def append_history(
        self, run_id: str, kind: str, node_id: str | None, data: Any, *, now: float
    ) -> None:
        """Append one history event."""

    def add_outbox(self, messages: Sequence[OutboxMessage], *, now: float) -> None:
        """Add outbox rows (an id already there is left alone)."""

    def put_batch(self, run_id: str, batch: str, pages: Mapping[int, Sequence[Any]]) -> None:
        """Upsert pages of a batch."""

    # --- waits and the inbox --------------------------------------------------------------
    def put_wait(self, key: Key, wait: Wait) -> None:
        """Write the node's wait (insert or replace)."""

    def end_wait(self, key: Key) -> None:
        """The node settled while parked: end its wait if it is still open."""

    def add_event(self, run_id: str, event_id: str, name: str, payload: Any, *, now: float) -> None:
        """Put a delivered event into the run's inbox."""

    def consume_event(self, run_id: str, event_id: str, node_id: str, iteration: int) -> None:
        """Record that the node consumed the event."""
