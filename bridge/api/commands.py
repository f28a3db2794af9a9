"""Commands on runs, published to Kafka for the bridge to apply: start, cancel, signal, resume.

Also ``retry`` (from nodes), ``pause`` and ``unpause`` (a resume of a paused run):
an operator's actions, which the bridge applies through ``tasks.lifecycle``.

A command is a message on ``<prefix>flowbridge.jobs`` or ``.events``; the
bridge applies it (idempotently). ``check=True`` refuses a cancel or signal
that cannot reach the run (no such run, already finished) before publishing,
which is what a person at the CLI or the HTTP API wants; the client API
publishes unchecked, so a cancel may overtake its start (it leaves a marker).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from bridge.api.queries import Queries
from bridge.errors import KafkaUnavailableError, RunStateError
from bridge.settings import KafkaSettings
from state.constants import RUN_PAUSED, RUN_RUNNABLE, RUN_TERMINAL
from tasks.errors import WORKFLOW_RETRY
from tasks.settings import Settings

__all__ = ["Commands", "event_message"]


def event_message(run_id: str, name: str, payload: Any, *, event_id: str) -> dict[str, Any]:
    """The events-topic message ``signal`` publishes (its size is what the bridge limits)."""
    msg: dict[str, Any] = {
        "v": 1,
        "type": "event",
        "run_id": run_id,
        "name": name,
        "event_id": event_id,
    }
    if payload is not None:
        msg["payload"] = payload
    return msg


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

    def check_retry(self, run_id: str, from_nodes: Sequence[str] = ()) -> None:
        """Raise ``RunStateError`` unless the run finished, started, and has the nodes named."""
        run = self.queries.record(run_id)
        if run is None:
            raise RunStateError(f"no run {run_id!r}", run_id=run_id, status=None)
        if run.status not in RUN_TERMINAL:
            raise RunStateError(
                f"run {run_id!r} is {run.status}: only a finished run is retried",
                run_id=run_id,
                status=run.status,
            )
        if not run.snapshot:
            raise RunStateError(
                f"run {run_id!r} never started (its start was rejected: {run.error}); replay "
                "its DLQ record (flowbridge dlq replay) or start it again with --run-id",
                run_id=run_id,
                status=run.status,
            )
        if run.snapshot.get("kind") == "workflow":
            raise RunStateError(
                WORKFLOW_RETRY.format(run_id=run_id), run_id=run_id, status=run.status
            )
        ids = [n.get("id") for n in run.snapshot.get("nodes", []) if isinstance(n, dict)]
        for node in from_nodes:
            if node not in ids:
                raise RunStateError(
                    f"run {run_id!r} has no node {node!r} "
                    f"(its blueprint has: {', '.join(map(str, ids))})",
                    run_id=run_id,
                    status=run.status,
                )

    def check_resumable(self, run_id: str, node: str) -> None:
        """Raise ``RunStateError`` unless the run is live and ``node`` is a wait or sleep of it."""
        from tasks.builtins import builtin

        self.check_reachable(run_id)
        run = self.queries.record(run_id)
        assert run is not None
        if run.snapshot.get("kind") == "workflow":
            raise RunStateError(
                f"run {run_id!r} is a code workflow: it has no nodes to resume; send it an "
                "event (flowbridge signal)",
                run_id=run_id,
                status=run.status,
            )
        specs = {str(n.get("id")): n for n in run.snapshot.get("nodes", []) if isinstance(n, dict)}
        resumable = [
            i
            for i, n in specs.items()
            if (b := builtin(str(n.get("uses")))) is not None
            and b.resume_event(i, n.get("params") or {}) is not None
        ]
        if node not in resumable:
            what = "has no node" if node not in specs else "cannot resume node"
            raise RunStateError(
                f"run {run_id!r} {what} {node!r}: only its wait and sleep nodes are resumed "
                f"({', '.join(map(repr, resumable)) or 'it has none'})",
                run_id=run_id,
                status=run.status,
            )

    def _check_status(self, run_id: str, allowed: frozenset[str], what: str) -> None:
        run = self.queries.record(run_id)
        if run is None:
            raise RunStateError(f"no run {run_id!r}", run_id=run_id, status=None)
        if run.status not in allowed:
            raise RunStateError(
                f"run {run_id!r} is {run.status}: {what}", run_id=run_id, status=run.status
            )

    def retry(self, run_id: str, from_nodes: Sequence[str] = (), *, check: bool = False) -> None:
        """Publish a retry of a finished run from ``from_nodes`` (default: its failed nodes)."""
        if check:
            self.check_retry(run_id, from_nodes)
        self._send(
            "jobs", run_id, {"v": 1, "type": "retry", "run_id": run_id, "from": list(from_nodes)}
        )

    def pause(self, run_id: str, *, check: bool = False) -> None:
        """Publish a pause: no node of the run starts until it is resumed."""
        if check:
            self._check_status(
                run_id, frozenset(RUN_RUNNABLE), "only a pending, running or waiting run is paused"
            )
        self._send("jobs", run_id, {"v": 1, "type": "pause", "run_id": run_id})

    def unpause(self, run_id: str, *, check: bool = False) -> None:
        """Publish a resume of a paused run (``resume`` is a parked node's)."""
        if check:
            self._check_status(
                run_id,
                frozenset({RUN_PAUSED}),
                "only a paused run is resumed (a parked wait: name its node after the run id)",
            )
        self._send("jobs", run_id, {"v": 1, "type": "resume", "run_id": run_id})

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
        self._send("events", run_id, event_message(run_id, name, payload, event_id=event_id))
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
            self.check_resumable(run_id, node)
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
