"""Errors of the bridge; they extend the tree drawn in ``state.errors``."""

from __future__ import annotations

from state.errors import FlowbridgeError

__all__ = ["MessageError"]


class MessageError(FlowbridgeError):
    """A Kafka message the bridge cannot accept; it goes to the DLQ with ``reason``."""

    def __init__(self, reason: str, *, run_id: str | None = None, is_start: bool = False) -> None:
        """Describe what is wrong; ``run_id`` of a rejected start gets the run marked failed."""
        super().__init__(reason)
        self.reason = reason
        self.run_id = run_id
        self.is_start = is_start
