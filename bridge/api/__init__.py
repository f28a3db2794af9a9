"""The operations on runs that the client, the CLI and the HTTP API share.

``Queries`` reads runs from the state store (one run, lists, history);
``Commands`` publishes start, cancel and event messages for the bridge to
apply (loaded on first access: it imports Kafka). The JSON shapes are in
``bridge.api.views``.
"""

from typing import Any

from bridge.api.queries import Queries
from bridge.api.views import history_json, run_json, run_summary

__all__ = ["Commands", "DeadLetters", "Queries", "history_json", "run_json", "run_summary"]


def __getattr__(name: str) -> Any:
    """Load ``Commands`` and ``DeadLetters`` (and with them Kafka) on first access."""
    if name == "Commands":
        from bridge.api.commands import Commands

        return Commands
    if name == "DeadLetters":
        from bridge.api.dlq import DeadLetters

        return DeadLetters
    raise AttributeError(f"module 'bridge.api' has no attribute {name!r}")
