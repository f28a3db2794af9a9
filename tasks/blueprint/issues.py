"""A validation problem (``ValidationIssue``) and the unknown-key finder every level uses."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ValidationIssue", "unknown_keys"]


@dataclass(frozen=True)
class ValidationIssue:
    """One problem with a blueprint: a stable ``code`` and a message naming the node or edge."""

    code: str
    message: str
    node: str | None = None
    edge: tuple[str, str] | None = None

    def __str__(self) -> str:
        return self.message


def unknown_keys(
    obj: Mapping[str, Any], known: tuple[str, ...], *, required: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    """``(key, hint)`` for each key of ``obj`` outside ``known``; the hint names what it may mean.

    A key that looks like a missing ``required`` one is left out: the missing
    key's own problem already says "is 'usse' a typo of 'uses'?".
    """
    missing = [k for k in required if k not in obj]
    found: list[tuple[str, str]] = []
    for key in obj:
        if key in known:
            continue
        if difflib.get_close_matches(str(key), missing, n=1, cutoff=0.7):
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(known)
        found.append((str(key), hint))
    return found
