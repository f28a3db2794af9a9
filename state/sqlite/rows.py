"""SQLite rows to records, and the one column list that leaves a run's snapshot out."""

from __future__ import annotations

import json
import sqlite3

from state.codec import loads
from state.records import NodeState, Run
from state.rules import RunView, Wait
from state.rules.waits import InboxEvent

__all__ = ["RUN_COLUMNS_NO_SNAPSHOT", "event_of", "node_of", "run_of", "view_of", "wait_of"]

#: A run row without its blueprint snapshot (an empty JSON object in its place).
RUN_COLUMNS_NO_SNAPSHOT = (
    "run_id, blueprint_id, version, status, input, '{}' AS snapshot, output, error, fence, "
    "created_at, updated_at, attempt, parent"
)


def run_of(row: sqlite3.Row) -> Run:
    """A ``runs`` row as a record."""
    return Run(
        run_id=row["run_id"],
        blueprint_id=row["blueprint_id"],
        version=row["version"],
        status=row["status"],
        input=loads(row["input"]),
        snapshot=loads(row["snapshot"]),
        output=loads(row["output"]),
        error=row["error"],
        fence=row["fence"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        attempt=row["attempt"],
        parent=loads(row["parent"]),
    )


def view_of(row: sqlite3.Row) -> RunView:
    """What the run rules read of a ``runs`` row (its last progress is ``updated_at``)."""
    return RunView(
        run_id=row["run_id"],
        status=row["status"],
        fence=row["fence"],
        progress_at=row["updated_at"],
        reconciled_at=row["reconciled_at"],
        attempt=row["attempt"],
    )


def _edges(text: str) -> tuple[str, ...]:
    # Most records have taken no edge yet: skip the decoder for them.
    return () if text == "[]" else tuple(json.loads(text))


def node_of(row: sqlite3.Row) -> NodeState:
    """A ``nodes`` row as a record."""
    return NodeState(
        run_id=row["run_id"],
        node_id=row["node_id"],
        iteration=row["iteration"],
        status=row["status"],
        attempts=row["attempts"],
        deliveries=row["deliveries"],
        output=loads(row["output"]),
        action=row["action"],
        edges_taken=_edges(row["edges_taken"]),
        error=row["error"],
        updated_at=row["updated_at"],
        claimed_by=row["claimed_by"],
        lease_until=row["lease_until"],
    )


def wait_of(row: sqlite3.Row) -> Wait:
    """A ``waits`` row as a wait (``woken`` may also be ``closed`` or ``cancelled`` here)."""
    return Wait(
        event=row["event"],
        due_at=row["due_at"],
        woken=row["woken"],
        woke_event=row["woke_event_id"],
    )


def event_of(row: sqlite3.Row) -> InboxEvent:
    """An ``inbox`` row as the rules see it."""
    return InboxEvent(event_id=row["event_id"], name=row["name"], payload=loads(row["payload"]))
