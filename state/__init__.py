"""Run state for flowbridge: the ``StateStore`` protocol, its backends and records."""

from state.constants import RUN_ACTIVE, RUN_TERMINAL
from state.errors import ConfigError, FlowbridgeError, SchemaError, StaleFenceError, StateError
from state.models import (
    Arrival,
    CommitResult,
    HistoryEvent,
    NodeCompletion,
    NodeState,
    OutboxMessage,
    Run,
)
from state.protocol import StateStore
from state.url import DEFAULT_STATE_URL, open_store, state_url_from_env

__all__ = [
    "DEFAULT_STATE_URL",
    "RUN_ACTIVE",
    "RUN_TERMINAL",
    "Arrival",
    "CommitResult",
    "ConfigError",
    "FlowbridgeError",
    "HistoryEvent",
    "NodeCompletion",
    "NodeState",
    "OutboxMessage",
    "Run",
    "SchemaError",
    "StaleFenceError",
    "StateError",
    "StateStore",
    "open_store",
    "state_url_from_env",
]
