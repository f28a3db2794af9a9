"""Run state for flowbridge: records, the ``StateStore`` protocol, its rules and backends.

``open_store(url)`` opens the backend its URL scheme names (``state.backends``):
``sqlite:///``, ``scylla://``/``cassandra://`` or ``memory://``.
"""

from state.constants import RUN_ACTIVE, RUN_TERMINAL
from state.errors import ConfigError, FlowbridgeError, SchemaError, StaleFenceError, StateError
from state.history import HistoryKind
from state.protocol import StateStore
from state.records import (
    Arrival,
    ArrivalOutcome,
    CommitResult,
    DeliveryOutcome,
    HistoryEvent,
    NodeCompletion,
    NodeState,
    NodeStatus,
    OutboxMessage,
    Run,
    RunStatus,
    WakeKind,
)
from state.url import DEFAULT_STATE_URL, open_store, state_url_from_env

__all__ = [
    "DEFAULT_STATE_URL",
    "RUN_ACTIVE",
    "RUN_TERMINAL",
    "Arrival",
    "ArrivalOutcome",
    "CommitResult",
    "ConfigError",
    "DeliveryOutcome",
    "FlowbridgeError",
    "HistoryEvent",
    "HistoryKind",
    "NodeCompletion",
    "NodeState",
    "NodeStatus",
    "OutboxMessage",
    "Run",
    "RunStatus",
    "SchemaError",
    "StaleFenceError",
    "StateError",
    "StateStore",
    "WakeKind",
    "open_store",
    "state_url_from_env",
]
