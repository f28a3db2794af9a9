"""Commands on runs, published to Kafka for the bridge to apply: start, cancel, signal, resume.

A command is a message on ``<prefix>flowbridge.jobs`` or ``.events``; the
bridge applies it (idempotently). ``check=True`` refuses a cancel or signal
that cannot reach the run (no such run, already finished) before publishing,
which is what a person at the CLI or the HTTP API wants; the client API
publishes unchecked, so a cancel may overtake its start (it leaves a marker).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from bridge.api.queries import Queries
from bridge.errors import KafkaUnavailableError, RunStateError
from bridge.settings import KafkaSettings
from state.constants import RUN_TERMINAL
from tasks.settings import Settings

__all__ = ["Commands"]


class Commands:
    """Publishes start, cancel and event messages for runs."""

    def __init__(self, *, settings: Settings, kafka: KafkaSettings, queries: Queries) -> None:
        """Publish to the topics ``settings`` name; ``queries`` answers the checks."""
        self.settings = settings
        self.kafka = kafka
        self.queries = queries
        self._producer: KafkaProducer | None = None

    def _send(self, topic: str, key: str, value: dict[str, Any]) -> None:
        try:
            if self._producer is None:
                self._producer = KafkaProducer(
                    acks="all", linger_ms=0, **self.kafka.client_config()
                )
            self._producer.send(
                self.settings.topic(topic), key=key.encode(), value=json.dumps(value).encode()
            ).get(timeout=30)
        except KafkaError as exc:
            raise KafkaUnavailableError(
                f"cannot publish to Kafka at {self.kafka.bootstrap_servers} "
                f"(KAFKA_BOOTSTRAP_SERVERS or KAFKA_URL): {type(exc).__name__}: {exc}"
            ) from exc

    def check_reachable(self, run_id: str) -> None:
        """Raise ``RunStateError`` if no run ``run_id`` exists or it has finished."""
        run = self.queries.record(run_id)
        if run is None:
            raise RunStateError(f"no run {run_id!r}", run_id=run_id, status=None)
        if run.status in RUN_TERMINAL:
            raise RunStateError(f"run {run_id!r} is {run.status}", run_id=run_id, status=run.status)

    def start(
        self,
        blueprint: str,
        input: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        version: str | None = None,
    ) -> str:
        """Publish a start message; the bridge creates the run (idempotent on ``run_id``)."""
        run_id = run_id or str(uuid.uuid4())
        msg: dict[str, Any] = {
            "v": 1,
            "type": "start",
            "run_id": run_id,
            "blueprint": blueprint,
            "input": {} if input is None else input,
        }
        if version is not None:
            msg["version"] = version
        self._send("jobs", run_id, msg)
        return run_id

    def cancel(self, run_id: str, reason: str | None = None, *, check: bool = False) -> None:
        """Publish a cancel message for ``run_id`` (checked first with ``check``)."""
        if check:
            self.check_reachable(run_id)
        msg: dict[str, Any] = {"v": 1, "type": "cancel", "run_id": run_id}
        if reason:
            msg["reason"] = reason
        self._send("jobs", run_id, msg)

    def signal(
        self,
        run_id: str,
        name: str,
        payload: Any = None,
        *,
        event_id: str | None = None,
        check: bool = False,
    ) -> str:
        """Publish event ``name`` for ``run_id``; duplicates of one ``event_id`` are ignored."""
        if check:
            self.check_reachable(run_id)
        event_id = event_id or str(uuid.uuid4())
        msg: dict[str, Any] = {
            "v": 1,
            "type": "event",
            "run_id": run_id,
            "name": name,
            "event_id": event_id,
        }
        if payload is not None:
            msg["payload"] = payload
        self._send("events", run_id, msg)
        return event_id

    def resume(
        self,
        run_id: str,
        node: str,
        *,
        output: Any = None,
        action: str | None = None,
        event_id: str | None = None,
        check: bool = False,
    ) -> str:
        """Publish a resume of ``node`` (a parked ``wait`` or ``sleep``) with an output and action.

        The node completes with ``output``; ``action`` chooses its edges. Duplicates of
        one ``event_id`` resume once.
        """
        if check:
            self.check_reachable(run_id)
        event_id = event_id or str(uuid.uuid4())
        msg: dict[str, Any] = {
            "v": 1,
            "type": "resume",
            "run_id": run_id,
            "node": node,
            "event_id": event_id,
        }
        if output is not None:
            msg["output"] = output
        if action is not None:
            msg["action"] = action
        self._send("events", run_id, msg)
        return event_id

    def close(self) -> None:
        """Flush and close the producer."""
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
