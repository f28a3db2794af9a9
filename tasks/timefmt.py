"""Times as users read them: ISO 8601 in UTC, the one format of the run JSON."""

from __future__ import annotations

import datetime as dt

__all__ = ["iso_utc"]


def iso_utc(ts: float) -> str:
    """``2026-01-31T12:00:00.000+00:00`` for an epoch time in seconds."""
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat(timespec="milliseconds")
