"""Stored values of the Scylla store: JSON columns, index keys, time-based ids, rows to records."""

from __future__ import annotations

import json
import secrets
import uuid
import zlib
from collections.abc import Collection
from typing import Any

from state.constants import STATUS_BUCKET_S
from state.errors import StaleFenceError
from state.models import NodeState, Run
from state.scylla_driver import UNSET, Row
from state.scylla_schema import TIMER_BUCKET_S, Effects, decode_effects

__all__ = ["bucket_of", "shard_of", "timer_bucket_of", "timeuuid"]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _u(value: Any) -> Any:
    """None becomes UNSET: an INSERT that binds null writes a tombstone for nothing."""
    return UNSET if value is None else value


def _clear(value: Any, current: Any) -> Any:
    """``value``; null to clear a ``current`` value; UNSET when both are null (no tombstone)."""
    if value is not None:
        return value
    return None if current is not None else UNSET


def bucket_of(ts: float) -> int:
    """The status-index bucket of a time (``STATUS_BUCKET_S`` wide)."""
    return int(ts // STATUS_BUCKET_S)


def timer_bucket_of(ts: float) -> int:
    """The timer-index bucket of a time (``TIMER_BUCKET_S`` wide)."""
    return int(ts // TIMER_BUCKET_S)


def _check_fence(run_id: str, current: int | None, fence: int) -> None:
    """Refuse a writer whose fence is older than the run's (it lost its lock)."""
    if fence < (current or 0):
        raise StaleFenceError(
            f"run {run_id!r}: fence {fence} is older than the run's fence {current}: "
            "this writer lost its lock"
        )


def shard_of(key: str, shards: int) -> int:
    """A stable shard number for ``key`` (crc32, identical in every process)."""
    return zlib.crc32(key.encode()) % shards


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


def _padded(statuses: Collection[str], n: int = 6) -> tuple[str, ...]:
    """``n`` values for ``IN (?, ..., ?)``: the set, repeated (an empty set matches no status)."""
    values = sorted(statuses) or ["\x00none"]
    return tuple(values[i % len(values)] for i in range(n))


def _pending_effects(row: Row) -> Effects | None:
    """The row's effects if they are not yet marked applied."""
    if row.get("lwt_op") in (row.get("effects_done") or ()):
        return None
    eff = decode_effects(row.get("effects"))
    return None if eff is None or eff.empty else eff


def _run_from(row: Row | None, *, snapshot: bool = True) -> Run | None:
    if row is None or row.get("status") is None:
        return None
    return Run(
        run_id=row["run_id"],
        blueprint_id=row.get("blueprint_id") or "",
        version=row.get("version") or "",
        status=row["status"],
        input=_loads(row.get("input")),
        snapshot=(_loads(row.get("snapshot")) or {}) if snapshot else {},
        output=_loads(row.get("output")),
        error=row.get("error"),
        fence=row.get("fence") or 0,
        created_at=row.get("created_at") or 0.0,
        updated_at=max(row.get("status_at") or 0.0, row.get("progress_at") or 0.0),
    )


def _node_from(row: Row) -> NodeState:
    return NodeState(
        run_id=row["run_id"],
        node_id=row["node_id"],
        iteration=row["iteration"],
        status=row["status"],
        attempts=row.get("attempts") or 0,
        deliveries=row.get("deliveries") or 0,
        output=_loads(row.get("output")),
        action=row.get("action"),
        edges_taken=tuple(row.get("edges_taken") or ()),
        error=row.get("error"),
        updated_at=row.get("updated_at") or 0.0,
    )
