"""What a built-in node is, and what the engine gives it to run (``BuiltinCall``).

Built-in nodes are flowbridge's own ``uses`` names (``sleep``, ``wait``): they
park their node in the state store instead of calling user code, so they see
the engine through this narrow interface and never import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from state.records import Wakeup
from tasks.durations import parse_duration
from tasks.errors import NodeError

__all__ = ["Builtin", "BuiltinCall", "BuiltinResult", "duration_param"]

#: What a built-in returns: ``(output, action)`` when its node completes, None once parked.
BuiltinResult = tuple[Any, str | None] | None


class BuiltinCall(Protocol):
    """One attempt of a built-in node, as the engine lets it act."""

    @property
    def run_id(self) -> str:
        """The run's id."""
        ...

    @property
    def node_id(self) -> str:
        """The node's id."""
        ...

    @property
    def iteration(self) -> int:
        """The node's iteration."""
        ...

    @property
    def params(self) -> Mapping[str, Any]:
        """The node's params."""
        ...

    def now(self) -> float:
        """The engine's clock (shifted by ``FLOWBRIDGE_CLOCK_OFFSET_S``, virtual in tests)."""
        ...

    def wakeup(self) -> Wakeup | None:
        """What woke this node after it parked: an event or its timer, else None."""
        ...

    def suspend(self, *, event: str | None = None, due_at: float | None = None) -> Wakeup | None:
        """Park the node until ``event`` or ``due_at``; an event already waiting returns at once."""
        ...

    def schedule_wake(self, delay_s: float) -> None:
        """Ask for a wake-up call after ``delay_s`` (short ones; the reconciler fires the rest)."""
        ...


class Builtin:
    """A built-in node: subclass, set ``uses``, implement ``run``."""

    #: The ``uses`` name blueprints write.
    uses: ClassVar[str]
    #: Whether a branch may keep running inside a Celery chord across this node.
    chord_safe: ClassVar[bool] = False

    def run(self, call: BuiltinCall) -> BuiltinResult:
        """Complete (output, action) or park (None); raise ``NodeError`` for bad params."""
        raise NotImplementedError  # pragma: no cover - every built-in implements it


def duration_param(call: BuiltinCall, uses: str, name: str, *, required: bool) -> float | None:
    """``params[name]`` as seconds; a missing or malformed one fails the node for good."""
    value = call.params.get(name)
    if value is None:
        if required:
            raise NodeError(f"node {call.node_id!r} ({uses}) needs params.{name}", retryable=False)
        return None
    try:
        return parse_duration(value)
    except (TypeError, ValueError) as exc:
        raise NodeError(f"node {call.node_id!r}: params.{name}: {exc}", retryable=False) from None
