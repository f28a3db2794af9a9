"""The Kafka side of flowbridge: the consumer (``python -m bridge``), relay, client and CLI.

The client classes load on first access, so that ``flowbridge --help`` and the
other CLI commands that never publish do not import Kafka.
"""

from typing import Any

from bridge.errors import MessageError
from bridge.settings import BridgeSettings, KafkaSettings

__all__ = ["BridgeSettings", "Client", "KafkaSettings", "MessageError", "RunHandle", "RunTimeout"]


def __getattr__(name: str) -> Any:
    """Load the Kafka-backed client classes on first access."""
    if name in ("Client", "RunHandle", "RunTimeout"):
        from bridge import client

        return getattr(client, name)
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
