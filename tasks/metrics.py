"""The engine's seam for metrics: what it counts, without knowing who exports it.

The engine calls ``Runtime.metrics`` where things happen (a run starts or
finishes, a node attempt ends, a join fires, a reconciler pass ends); the
processes give their runtime an exporter (``tasks.worker.metrics``: Prometheus,
in multiprocess mode under a prefork pool). ``NullMetrics`` counts nothing: the
default, and what ``flowbridge.testing`` uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["Metrics", "NullMetrics"]


class Metrics(Protocol):
    """What the engine reports (labels are blueprint and node ids, never payloads)."""

    def run_started(self, blueprint: str) -> None:
        """A run was created."""
        ...

    def run_finished(self, blueprint: str, status: str) -> None:
        """A run reached a terminal status (``completed``, ``failed``, ``cancelled``)."""
        ...

    def run_retried(self, blueprint: str) -> None:
        """A finished run started its next attempt."""
        ...

    def node_attempt(self, blueprint: str, node: str, outcome: str, duration_s: float) -> None:
        """A node attempt ended: ``completed``, ``retry``, ``failed``, ``waiting``, ..."""
        ...

    def join_fired(self, blueprint: str, join: str) -> None:
        """A join's conditional fire applied."""
        ...

    def reconciler_pass(self, report: Mapping[str, int]) -> None:
        """A reconciler pass ended (its report: stalled, reconciled, timers, failed)."""
        ...

    def dispatch_check(self, report: Mapping[str, int]) -> None:
        """A dispatch check ended (its report: lost, orphaned, redispatched, requeued)."""
        ...


class NullMetrics:
    """Counts nothing."""

    def run_started(self, blueprint: str) -> None:
        """Ignore it."""

    def run_finished(self, blueprint: str, status: str) -> None:
        """Ignore it."""

    def run_retried(self, blueprint: str) -> None:
        """Ignore it."""

    def node_attempt(self, blueprint: str, node: str, outcome: str, duration_s: float) -> None:
        """Ignore it."""

    def join_fired(self, blueprint: str, join: str) -> None:
        """Ignore it."""

    def reconciler_pass(self, report: Mapping[str, int]) -> None:
        """Ignore it."""

    def dispatch_check(self, report: Mapping[str, int]) -> None:
        """Ignore it."""
