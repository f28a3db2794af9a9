"""What a built-in node is, and what the engine gives it to run (``BuiltinCall``).

Built-in nodes are flowcraft's ``uses`` names (``sleep``, ``wait``, ``webhook``,
``subflow``, ``batch-scatter``, ``batch-gather``, ``loop-controller``): they park
their node in the state store, start a child run or fan out over a list
instead of calling user code, so they see the engine through this narrow
interface and never import it. Each declares its params (validation refuses
others, listing these) and checks their values before a run starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from state.records import Wakeup
from tasks.durations import parse_duration
from tasks.errors import NodeError

__all__ = [
    "RESUME_EVENT_ID",
    "Builtin",
    "BuiltinCall",
    "BuiltinResult",
    "ChildRun",
    "ContextAccess",
    "duration_param",
    "resumed",
]

#: What a built-in returns: ``(output, action)`` when its node completes, None once parked.
BuiltinResult = tuple[Any, str | None] | None

#: The event id prefix of a resume (``flowbridge resume``): its payload is ``{output, action}``.
RESUME_EVENT_ID = "resume:"


def resumed(wake: Wakeup | None) -> Mapping[str, Any] | None:
    """The ``{output, action}`` of a resume that woke the node (None: woken otherwise)."""
    if (
        wake is None
        or wake.kind != "event"
        or not (wake.event_id or "").startswith(RESUME_EVENT_ID)
    ):
        return None
    return wake.payload if isinstance(wake.payload, Mapping) else {}


@dataclass(frozen=True)
class ChildRun:
    """A child run as its parent's ``subflow`` node sees it when it wakes."""

    run_id: str
    status: str
    output: Any
    error: str | None
    #: The child's blueprint's terminal nodes' outputs: node id to output (completed ones).
    terminals: Mapping[str, Any]
    #: Every completed node's output, by id.
    outputs: Mapping[str, Any]
    #: The child's final context.
    context: Mapping[str, Any]


class ContextAccess(Protocol):
    """The run context as a built-in uses it (writes commit with its completion)."""

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``."""
        ...

    def set(self, key: str, value: Any) -> None:
        """Stage ``key = value``."""
        ...


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
    def attempt(self) -> int:
        """The attempt's number (1-based)."""
        ...

    @property
    def params(self) -> Mapping[str, Any]:
        """The node's params."""
        ...

    @property
    def input(self) -> Any:
        """The node's input (as any node's ``ctx.input``)."""
        ...

    @property
    def context(self) -> ContextAccess:
        """The run context."""
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

    def evaluate(self, expression: str) -> Any:
        """An expression's value over the run's scope (node outputs by id, then the context)."""
        ...

    def child_run_id(self) -> str:
        """The id of this attempt's child run (the same on every delivery of the attempt)."""
        ...

    def start_child(self, blueprint_id: str, run_input: Any) -> str:
        """Start this attempt's child run of ``blueprint_id`` once; its id."""
        ...

    def child(self, run_id: str) -> ChildRun | None:
        """A child run as it is now (None: there is none)."""
        ...

    def scatter(self, items: list[Any]) -> int:
        """Keep ``items`` in pages for the batch's item tasks; how many there are."""
        ...

    def gather(self) -> Any:
        """The batch's item outputs in order, kept in pages; a reference to them."""
        ...

    def webhook_url(self) -> str:
        """Where an HTTP call for this node should go (the HTTP API serves it)."""
        ...


class Builtin:
    """A built-in node: subclass, set ``uses`` and ``params``, implement ``run``."""

    #: The ``uses`` name blueprints write.
    uses: ClassVar[str]
    #: Its params: name to what it means (validation refuses other names, listing these).
    params: ClassVar[Mapping[str, str]] = {}
    #: Whether a branch may keep running inside a Celery chord across this node.
    chord_safe: ClassVar[bool] = False

    def check(self, params: Mapping[str, Any]) -> list[str]:
        """Problems with ``params`` (unknown names are the validator's); none by default."""
        return []

    def resume_event(self, node_id: str, params: Mapping[str, Any]) -> str | None:
        """The event a resume of this node is delivered as (None: it cannot be resumed)."""
        return None

    def run(self, call: BuiltinCall) -> BuiltinResult:
        """Complete (output, action) or park (None); raise ``NodeError`` to fail."""
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


def duration_problem(params: Mapping[str, Any], name: str, *, required: bool) -> list[str]:
    """The validation problem of a duration param, if any."""
    value = params.get(name)
    if value is None:
        return (
            [f"params.{name} is required (milliseconds, or a duration like '5s')"]
            if required
            else []
        )
    try:
        parse_duration(value)
    except (TypeError, ValueError) as exc:
        return [f"params.{name}: {exc}"]
    return []


def positive_int_problem(params: Mapping[str, Any], name: str) -> list[str]:
    """The validation problem of an optional positive integer param, if any."""
    value = params.get(name)
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return []
    return [f"params.{name} must be a positive integer, got {value!r}"]


def text_map_problem(params: Mapping[str, Any], name: str) -> list[str]:
    """The validation problem of an optional ``{key: name}`` param, if any."""
    value = params.get(name)
    if value is None:
        return []
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        return []
    return [f"params.{name} must be an object of non-empty strings, got {value!r}"]
