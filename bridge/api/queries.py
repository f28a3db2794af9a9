"""Read-only questions about runs, answered from the state store: one run, lists, history.

The client, the CLI and the HTTP API ask through ``Queries``, so they show a
run the same way. Nothing here needs Kafka or Celery.
"""

from __future__ import annotations

from typing import Any

from bridge.api.views import history_json, run_json, run_summary, timeline
from state.history import HistoryKind
from state.protocol import StateStore
from state.records import Run

__all__ = ["Queries"]

#: History kinds that say the run received an event (kept, consumed or matched to a wait).
_RECEIVED = frozenset(
    {HistoryKind.EVENT_STORED, HistoryKind.EVENT_CONSUMED, HistoryKind.EVENT_MATCHED}
)


class Queries:
    """Views of runs in one state store."""

    def __init__(self, store: StateStore) -> None:
        """Read from ``store``."""
        self.store = store

    def record(self, run_id: str) -> Run | None:
        """The stored run record (None if there is no such run)."""
        return self.store.get_run(run_id)

    def run(self, run_id: str) -> dict[str, Any] | None:
        """The run as JSON (None if there is no such run)."""
        run = self.store.get_run(run_id)
        return None if run is None else run_json(self.store, run)

    def runs(
        self,
        *,
        status: str | None = None,
        blueprint: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Recent runs, newest first: id, blueprint, version, status, times (a page of them)."""
        return [
            run_summary(r)
            for r in self.records(status=status, blueprint=blueprint, limit=limit, offset=offset)
        ]

    def records(
        self,
        *,
        status: str | None = None,
        blueprint: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Run]:
        """Stored runs, newest first, with a status and/or blueprint (a page: offset, limit).

        The store indexes runs by status only, so a blueprint filter reads further back.
        """
        wanted = offset + limit
        scan = wanted if blueprint is None else max(wanted * 10, 1000)
        found = self.store.list_runs(status=status, limit=scan)
        if blueprint is not None:
            found = [r for r in found if r.blueprint_id == blueprint]
        return found[offset:wanted]

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """The run's history in commit order (empty for an unknown run)."""
        return history_json(self.store.get_history(run_id))

    def timeline(self, run_id: str) -> list[dict[str, Any]]:
        """The run's history as a timeline: time, node, event, attempt, error (``views``)."""
        return timeline(self.store.get_history(run_id))

    def received_event(self, run_id: str, event_id: str) -> bool:
        """Whether the run received the event ``event_id`` (not one dropped as too late)."""
        return any(
            e.kind in _RECEIVED and isinstance(e.data, dict) and e.data.get("id") == event_id
            for e in self.store.get_history(run_id)
        )

    def context(self, run_id: str) -> dict[str, Any]:
        """The run's context (one value per key)."""
        return self.store.get_context(run_id)
