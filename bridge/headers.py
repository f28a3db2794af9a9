"""The Kafka record headers flowbridge reads and writes: the DLQ's, a replay's, the trace's.

- A dead-lettered record carries ``flowbridge-error`` (why) and
  ``flowbridge-source-topic/-partition/-offset`` (where it came from).
- A replayed record (``flowbridge dlq replay``) carries ``flowbridge-replay-of``:
  ``topic:partition:offset`` of the original. The bridge names what a record
  creates (a start's run id, an event's id) by ``origin_of``, so replaying one
  record twice starts one run and delivers one event.
- The W3C trace context (``traceparent``, ``tasks.tracing``).
"""

from __future__ import annotations

from typing import Any

from tasks.tracing import TRACE_HEADERS

__all__ = ["REPLAY_HEADER", "dead_letter_headers", "header", "origin_of", "trace_of"]

#: The header a replayed record carries: ``topic:partition:offset`` of the original.
REPLAY_HEADER = "flowbridge-replay-of"


def header(rec: Any, name: str) -> str | None:
    """A record's header as text (None when it has none of that name)."""
    for key, value in rec.headers or ():
        if key == name and value is not None:
            return bytes(value).decode(errors="replace")
    return None


def trace_of(rec: Any) -> dict[str, str]:
    """The W3C trace context in a record's headers."""
    return {name: value for name in TRACE_HEADERS if (value := header(rec, name)) is not None}


def origin_of(rec: Any) -> str:
    """``topic:partition:offset`` of the record, or of the original a replay re-produced."""
    return header(rec, REPLAY_HEADER) or f"{rec.topic}:{rec.partition}:{rec.offset}"


def dead_letter_headers(rec: Any, reason: str) -> list[tuple[str, bytes]]:
    """What a DLQ copy of ``rec`` carries: the reason, the source, the original of a replay."""
    headers = [
        ("flowbridge-error", reason.encode()),
        ("flowbridge-source-topic", rec.topic.encode()),
        ("flowbridge-source-partition", str(rec.partition).encode()),
        ("flowbridge-source-offset", str(rec.offset).encode()),
    ]
    replayed = header(rec, REPLAY_HEADER)
    if replayed is not None:
        headers.append((REPLAY_HEADER, replayed.encode()))
    return headers
