"""Errors of the bridge; they extend the tree drawn in ``state.errors``."""

from __future__ import annotations

import json
import re
from typing import Any

from state.errors import FlowbridgeError

__all__ = [
    "DeadLetterError",
    "KafkaUnavailableError",
    "MessageError",
    "RunStateError",
    "reject_lone_surrogates",
]


class MessageError(FlowbridgeError):
    """A Kafka message the bridge cannot accept; it goes to the DLQ with ``reason``."""

    def __init__(
        self,
        reason: str,
        *,
        run_id: str | None = None,
        is_start: bool = False,
        blueprint: str = "",
        input: Any = None,
    ) -> None:
        """Describe what is wrong; a rejected start that names its run is recorded as failed.

        ``blueprint`` and ``input`` are what the rejected start asked for, kept on that record.
        """
        super().__init__(reason)
        self.reason = reason
        self.run_id = run_id
        self.is_start = is_start
        self.blueprint = blueprint
        self.input = input


class KafkaUnavailableError(FlowbridgeError):
    """Kafka could not be reached, or did not confirm a write in time."""


class RunStateError(FlowbridgeError):
    """A command cannot reach the run: there is no such run, or it has finished."""

    def __init__(self, message: str, *, run_id: str, status: str | None) -> None:
        """Say why; ``status`` is the run's (None when there is no such run)."""
        super().__init__(message)
        self.run_id = run_id
        self.status = status


class DeadLetterError(FlowbridgeError):
    """A dead-lettered record cannot be found or replayed as asked (the message says why)."""


#: A ``\\uD800``-``\\uDFFF`` escape: JSON may spell a lone surrogate, which is not text.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def reject_lone_surrogates(raw: bytes, obj: Any) -> None:
    """Refuse a decoded value holding a lone UTF-16 surrogate (no store or topic can keep it).

    Only values whose text has a surrogate escape are re-encoded to check: a valid pair
    decodes to one character and passes.
    """
    if not _SURROGATE_ESCAPE.search(raw):
        return
    try:
        json.dumps(obj, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise MessageError(
            "value holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape without its pair): "
            "not text"
        ) from None
