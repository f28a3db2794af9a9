"""Read-only questions about runs, answered from the state store: one run, lists, history.

The client, the CLI and the HTTP API ask through ``Queries``, so they show a
run the same way. Nothing here needs Kafka or Celery.
"""

from __future__ import annotations

from typing import Any

from bridge.api.views import history_json, run_json, run_summary
from state.protocol import StateStore
from state.records import Run

__all__ = ["Queries"]


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

    def runs(self, *, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Recent runs, newest first: id, blueprint, version, status, times."""
        return [run_summary(r) for r in self.store.list_runs(status=status, limit=limit)]

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """The run's history in commit order (empty for an unknown run)."""
        return history_json(self.store.get_history(run_id))
