"""The JSON codec of stored payloads (inputs, outputs, context values, event data), one for all.

Compact separators and UTF-8 text: every backend stores the same bytes for the
same value, and a value read back is what ``json.loads`` gives (tuples become lists).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dump_headers", "dumps", "load_headers", "loads"]


#: One encoder for every call (``json.dumps`` with options builds a new one each time).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Encode a JSON value as compact text."""
    return _ENCODER.encode(value)


def loads(text: str | None) -> Any:
    """Decode stored JSON text; None (a missing column) stays None."""
    return None if text is None else json.loads(text)


def dump_headers(headers: tuple[tuple[str, str], ...]) -> str | None:
    """An outbox row's extra Kafka headers as stored (None: none)."""
    return dumps([list(h) for h in headers]) if headers else None


def load_headers(text: str | None) -> tuple[tuple[str, str], ...]:
    """What ``dump_headers`` stored."""
    return tuple((str(k), str(v)) for k, v in loads(text) or ())
