"""Durations as blueprints write them: ``500ms``, ``5s``, ``10m``, ``2h``, ``2d`` or milliseconds.

flowcraft writes ``retryDelay`` and ``timeout`` as numbers of milliseconds;
flowbridge also accepts strings with a unit, including compound ones such as
``1h30m``. Everything is converted to float seconds.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration"]

_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:(?:\d+(?:\.\d+)?|\.\d+)\s*(?:ms|s|m|h|d)\s*)+")
_EXAMPLES = "write e.g. '500ms', '5s', '10m', '2h', '2d' or '1h30m'"


def parse_duration(value: str | float | timedelta, *, number_unit: str = "ms") -> float:
    """Convert a duration to float seconds; a bare number counts in ``number_unit`` (ms).

    Raises:
        ValueError: the value is negative, not finite, has no or an unknown unit.
    """
    if number_unit not in _UNIT_S:
        raise ValueError(f"number_unit must be one of {', '.join(_UNIT_S)}, not {number_unit!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"duration must be a number or a string like '5s', not {value!r}")
    elif isinstance(value, int | float):
        seconds = value * _UNIT_S[number_unit]
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError(
            f"duration must be a number or a string like '5s', not {type(value).__name__}"
        )
    if not math.isfinite(seconds):
        raise ValueError(f"duration {value!r} is not finite")
    if seconds < 0:
        raise ValueError(f"duration {value!r} is negative")
    return float(seconds)


def _parse_text(text: str) -> float:
    stripped = text.strip().lower()
    if not stripped:
        raise ValueError(f"duration is empty; {_EXAMPLES}")
    if stripped.startswith("-"):
        raise ValueError(f"duration {text!r} is negative")
    if re.fullmatch(r"\d+(?:\.\d+)?", stripped):
        # A bare number in a string is ambiguous: flowcraft's numbers are ms, people mean seconds.
        raise ValueError(f"duration {text!r} has no unit; write '{stripped}ms' or '{stripped}s'")
    if not _WHOLE.fullmatch(stripped):
        raise ValueError(f"duration {text!r} is not understood; {_EXAMPLES}")
    return sum(float(num) * _UNIT_S[unit] for num, unit in _PART.findall(stripped))


def format_duration(seconds: float) -> str:
    """Render seconds compactly for messages, e.g. ``300s``, ``1.5s`` or ``250ms``."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"
