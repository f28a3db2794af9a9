"""What a node function receives (``ctx``) and may return (``Result``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from state.records import OutboxMessage
from tasks.tracing import current_headers

__all__ = ["NodeContext", "Result", "RunContext"]

_MISSING = object()


@dataclass(frozen=True)
class Result:
    """A node's output plus the ``action`` that chooses its outgoing edges."""

    output: Any = None
    action: str | None = None


class RunContext:
    """The run's key/value context; writes are staged and commit with the node's completion."""

    def __init__(self, load: Callable[[], dict[str, Any]]) -> None:
        """Load committed values lazily through ``load``."""
        self._load = load
        self._committed: dict[str, Any] | None = None
        self.staged: dict[str, Any] = {}

    def _values(self) -> dict[str, Any]:
        if self._committed is None:
            self._committed = self._load()
        return self._committed

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``: this node's staged write, else the committed one."""
        if key in self.staged:
            return self.staged[key]
        return self._values().get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Stage ``key = value``; it is written only if this attempt completes the node."""
        if not isinstance(key, str) or not key:
            raise TypeError(f"context keys are non-empty strings, not {key!r}")
        self.staged[key] = value

    def as_dict(self) -> dict[str, Any]:
        """Committed values overlaid with this node's staged writes."""
        return {**self._values(), **self.staged}


class _Outputs(Mapping[str, Any]):
    """Earlier nodes' outputs, loaded on first access."""

    def __init__(self, load: Callable[[], dict[str, Any]]) -> None:
        self._load = load
        self._data: dict[str, Any] | None = None

    def _d(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self._load()
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._d()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d())

    def __len__(self) -> int:
        return len(self._d())


class NodeContext:
    """The argument of every node function: the run, the node, and what it may read or write."""

    def __init__(
        self,
        *,
        run_id: str,
        node_id: str,
        iteration: int,
        attempt: int,
        input: Any,
        params: Mapping[str, Any],
        load_outputs: Callable[[], dict[str, Any]],
        load_context: Callable[[], dict[str, Any]],
        load_branches: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """Build the context of one attempt of one node."""
        self.run_id = run_id
        self.node_id = node_id
        self.iteration = iteration
        #: 1-based; grows with each retry, not with redeliveries of the same attempt.
        self.attempt = attempt
        self.input = input
        self.params = params
        self.outputs: Mapping[str, Any] = _Outputs(load_outputs)
        self.context = RunContext(load_context)
        #: For a join: each predecessor's ``{"outcome", "output", "error"}`` (empty otherwise).
        self.branches: Mapping[str, Any] = _Outputs(load_branches or dict)
        self.emitted: list[OutboxMessage] = []

    @property
    def idempotency_key(self) -> str:
        """``{run_id}:{node_id}:{iteration}``, equal on every attempt; give it to external APIs."""
        return f"{self.run_id}:{self.node_id}:{self.iteration}"

    def emit(self, topic: str, value: Any, key: str | None = None, *, raw: bool = False) -> None:
        """Publish ``value`` to Kafka ``topic`` when this attempt commits (at least once).

        The record's value is ``value`` as JSON; with ``raw=True`` it is the string
        itself (UTF-8), for consumers that expect plain text.
        """
        value = emitted_value(topic, value, raw=raw)
        n = len(self.emitted)
        # Same id on every attempt and redelivery, so consumers can dedupe on flowbridge-id.
        msg_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowbridge:{self.idempotency_key}:emit:{n}"))
        self.emitted.append(
            OutboxMessage(
                id=msg_id,
                topic=topic,
                key=self.run_id if key is None else key,
                value=value,
                # The node attempt's span: consumers of the record continue its trace.
                headers=current_headers(),
            )
        )

    def __repr__(self) -> str:
        """Show which node and attempt this is."""
        return f"<NodeContext {self.run_id}/{self.node_id} attempt={self.attempt}>"


def emitted_value(topic: str, value: Any, *, raw: bool) -> Any:
    """Check an ``emit``'s topic and value; the value as the outbox stores it."""
    if not isinstance(topic, str) or not topic:
        raise TypeError(f"emit: topic must be a non-empty string, not {topic!r}")
    if raw:
        if not isinstance(value, str):
            raise TypeError(f"emit(raw=True) sends text: value must be a str, not {value!r}")
        return OutboxMessage.text(value)
    if OutboxMessage.is_reserved(value):
        raise TypeError(f"emit: {value!r} has the shape flowbridge reserves for raw text")
    return value
