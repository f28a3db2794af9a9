"""Deprecated alias of ``state.records`` (kept until ``tasks`` and ``bridge`` import that)."""

from __future__ import annotations

from state.records import (
    Arrival,
    CommitResult,
    Delivery,
    DueTimer,
    HistoryEvent,
    NodeCompletion,
    NodeState,
    OutboxMessage,
    Run,
    Wakeup,
)

__all__ = [
    "Arrival",
    "CommitResult",
    "Delivery",
    "DueTimer",
    "HistoryEvent",
    "NodeCompletion",
    "NodeState",
    "OutboxMessage",
    "Run",
    "Wakeup",
]
