"""Run lifecycle events (``run.started``, ``run.completed``, ...) as outbox rows."""

from __future__ import annotations

import time
import uuid
from typing import Any

from state.records import OutboxMessage
from tasks.settings import Settings
from tasks.tracing import current_headers

__all__ = ["lifecycle_event"]


def lifecycle_event(settings: Settings, run_id: str, kind: str, **fields: Any) -> OutboxMessage:
    """The ``run.<kind>`` record for the runs topic, with an id stable per run and kind."""
    value = {"v": 1, "type": f"run.{kind}", "run_id": run_id, **fields, "at": time.time()}
    return OutboxMessage(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"flowbridge:{run_id}:run.{kind}")),
        topic=settings.topic("runs"),
        key=run_id,
        value=value,
        headers=current_headers(),
    )
