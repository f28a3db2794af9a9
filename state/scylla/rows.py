"""Stored values of the Scylla store: unset columns, time-based ids, rows to records and views."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Collection
from typing import Any

from state.codec import loads
from state.records import NodeState, Run
from state.rules import RunView, Wait
from state.scylla.driver import UNSET, Row
from state.scylla.effects import Effects, decode_effects
from state.scylla.schema import TIMER_BUCKET_S

__all__ = [
    "clear",
    "node_of",
    "padded",
    "pending_effects",
    "progress_of",
    "run_of",
    "timer_bucket_of",
    "timeuuid",
    "unset",
    "view_of",
    "wait_of",
]


def unset(value: Any) -> Any:
    """None becomes UNSET: an INSERT that binds null writes a tombstone for nothing."""
    return UNSET if value is None else value


def clear(value: Any, current: Any) -> Any:
    """``value``; null to clear a ``current`` value; UNSET when both are null (no tombstone)."""
    if value is not None:
        return value
    return None if current is not None else UNSET


def timer_bucket_of(ts: float) -> int:
    """The timer-index bucket of a time (``TIMER_BUCKET_S`` wide)."""
    return int(ts // TIMER_BUCKET_S)


def timeuuid(us: int) -> uuid.UUID:
    """A version-1 UUID for the time ``us`` (µs since the epoch) with random node bits."""
    ts = us * 10 + 0x01B21DD213814000
    rand = secrets.randbits(62)
    clock_seq = rand & 0x3FFF
    return uuid.UUID(
        fields=(
            ts & 0xFFFFFFFF,
            (ts >> 32) & 0xFFFF,
            ((ts >> 48) & 0x0FFF) | 0x1000,
            (clock_seq >> 8) | 0x80,
            clock_seq & 0xFF,
            rand >> 14,
        )
    )


def padded(statuses: Collection[str], n: int = 6) -> tuple[str, ...]:
    """``n`` values for ``IN (?, ..., ?)``: the set, repeated (an empty set matches no status)."""
    values = sorted(statuses) or ["\x00none"]
    return tuple(values[i % len(values)] for i in range(n))


def pending_effects(row: Row) -> Effects | None:
    """The row's effects if they are not yet marked applied."""
    if row.get("lwt_op") in (row.get("effects_done") or ()):
        return None
    eff = decode_effects(row.get("effects"))
    return None if eff is None or eff.empty else eff


def progress_of(row: Row) -> float:
    """A run row's last progress: its status change or a later plain ``progress_at`` write."""
    return max(row.get("status_at") or 0.0, row.get("progress_at") or 0.0)


def run_of(row: Row | None, *, snapshot: bool = True) -> Run | None:
    """A ``runs`` row as a record (None for none, or for a row left with only its key)."""
    if row is None or row.get("status") is None:
        return None
    return Run(
        run_id=row["run_id"],
        blueprint_id=row.get("blueprint_id") or "",
        version=row.get("version") or "",
        status=row["status"],
        input=loads(row.get("input")),
        snapshot=(loads(row.get("snapshot")) or {}) if snapshot else {},
        output=loads(row.get("output")),
        error=row.get("error"),
        fence=row.get("fence") or 0,
        created_at=row.get("created_at") or 0.0,
        updated_at=progress_of(row),
        attempt=row.get("attempt") or 1,
        parent=loads(row.get("parent")),
    )


def view_of(row: Row | None) -> RunView | None:
    """What the run rules read of a ``runs`` row."""
    if row is None:
        return None
    return RunView(
        run_id=row["run_id"],
        status=row["status"],
        fence=row.get("fence") or 0,
        progress_at=progress_of(row),
        reconciled_at=row.get("reconciled_at"),
        attempt=row.get("attempt") or 1,
    )


def node_of(row: Row | None) -> NodeState | None:
    """A ``nodes`` row as a record."""
    if row is None:
        return None
    return NodeState(
        run_id=row["run_id"],
        node_id=row["node_id"],
        iteration=row["iteration"],
        status=row["status"],
        attempts=row.get("attempts") or 0,
        deliveries=row.get("deliveries") or 0,
        output=loads(row.get("output")),
        action=row.get("action"),
        edges_taken=tuple(row.get("edges_taken") or ()),
        error=row.get("error"),
        updated_at=row.get("updated_at") or 0.0,
        claimed_by=row.get("claimed_by"),
        lease_until=row.get("lease_until"),
    )


def wait_of(row: Row | None) -> Wait | None:
    """The wait kept on a ``nodes`` row (schema 2 columns)."""
    if row is None:
        return None
    return Wait(
        event=row.get("wait_event"),
        due_at=row.get("wait_due"),
        woken=row.get("woken"),
        woke_event=row.get("woke_event"),
    )
