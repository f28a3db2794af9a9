"""Run lifecycle events (``run.started``, ``run.completed``, ...) as outbox rows."""

from __future__ import annotations

import time
import uuid
from typing import Any

from state.records import OutboxMessage
from tasks.settings import Settings
from tasks.tracing import current_headers

__all__ = ["lifecycle_events"]


def lifecycle_events(
    settings: Settings, run_id: str, kind: str, *, enabled: bool = True, **fields: Any
) -> list[OutboxMessage]:
    """The ``run.<kind>`` record for the runs topic (id stable per run and kind), if published.

    None when ``FLOWBRIDGE_RUN_EVENTS=off`` or ``enabled`` is false (the blueprint's
    ``metadata.runEvents``): a run that nobody watches on Kafka saves an outbox row, its
    relay and a Kafka record per start and end (``docs/performance.md``).
    """
    if not (settings.run_events and enabled):
        return []
    value = {"v": 1, "type": f"run.{kind}", "run_id": run_id, **fields, "at": time.time()}
    return [
        OutboxMessage(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowbridge:{run_id}:run.{kind}")),
            topic=settings.topic("runs"),
            key=run_id,
            value=value,
            headers=current_headers(),
        )
    ]
