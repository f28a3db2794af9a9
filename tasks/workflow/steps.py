"""A code workflow run's durable steps, as the run JSON lists them (``"<seq>:<name>"``).

Read from the history without running workflow code: each activity, timer,
child, wait and ref command with what became of it (an outcome recorded for
its seq, a cancel, or still pending).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tasks.workflow.history import Activation

__all__ = ["steps"]

_STEPS = ("activity", "timer", "child", "wait", "ref")


def steps(history: Sequence[Activation], *, finished: bool = False) -> dict[str, dict[str, Any]]:
    """``{"<seq>:<name>": {"type", "status", "output", "error"}}`` in seq order."""
    outcomes = {i.seq: i for a in history for i in a.inputs if i.type in ("result", "timer")}
    cancelled = {c.seq for a in history for c in a.commands if c.type == "cancel"}
    out: dict[str, dict[str, Any]] = {}
    for act in history:
        for c in act.commands:
            if c.type not in _STEPS:
                continue
            done = outcomes.get(c.seq)
            if done is not None and done.error is not None:
                status, output, error = "failed", None, _text(done.error)
            elif done is not None:
                status, output, error = "completed", done.value, None
            elif c.seq in cancelled:
                status, output, error = "cancelled", None, None
            else:
                status, output, error = ("ended" if finished else "pending"), None, None
            name = c.name or c.type
            out[f"{c.seq}:{name}"] = {
                "type": c.type,
                "status": status,
                "attempts": 1 if done is not None else 0,
                "output": output,
                "error": error,
            }
    return out


def _text(error: Any) -> str:
    if isinstance(error, dict):
        kind = error.get("type")
        return f"{kind}: {error.get('message')}" if kind else str(error.get("message"))
    return str(error)
