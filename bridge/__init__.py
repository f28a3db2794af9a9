"""The Kafka side of flowbridge: the consumer (``python -m bridge``), relay, client and CLI."""

from bridge.client import Client, RunHandle, RunTimeout
from bridge.errors import MessageError
from bridge.settings import BridgeSettings, KafkaSettings

__all__ = ["BridgeSettings", "Client", "KafkaSettings", "MessageError", "RunHandle", "RunTimeout"]
