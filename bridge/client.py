"""The client API: start runs through Kafka, then watch them in the state store.

client = Client.from_env()
handle = client.start("order", {"amount": 3})
run = handle.result(timeout=30)   # the run as JSON once it finished
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, overload

from bridge.api.commands import Commands
from bridge.api.queries import Queries
from bridge.settings import KafkaSettings
from state.constants import RUN_TERMINAL
from state.protocol import StateStore
from tasks.runtime import open_state
from tasks.settings import Settings

__all__ = ["Client", "RunHandle", "RunTimeout"]


class RunTimeout(TimeoutError):
    """The run did not finish within the time given to ``RunHandle.result``."""


class RunHandle:
    """A started run: its id, and ways to watch, signal or cancel it."""

    def __init__(self, client: Client, run_id: str) -> None:
        """Refer to ``run_id`` through ``client``."""
        self.client = client
        self.run_id = run_id

    def run(self) -> dict[str, Any] | None:
        """The run as JSON, or None while the bridge has not created it yet."""
        return self.client.get_run(self.run_id)

    def status(self) -> str | None:
        """The run's status, or None while it does not exist yet."""
        run = self.run()
        return None if run is None else str(run["status"])

    def result(
        self,
        timeout: float | None = None,
        *,
        poll_s: float = 0.05,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Wait until the run finishes and return it as JSON; ``RunTimeout`` after ``timeout``.

        ``on_change`` is called with the run each time it is seen to have changed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = poll_s / 5
        seen: dict[str, Any] | None = None
        while True:
            run = self.run()
            if on_change is not None and run is not None and run != seen:
                seen = run
                on_change(run)
            if run is not None and run["status"] in RUN_TERMINAL:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise RunTimeout(f"run {self.run_id} did not finish within {timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 2, poll_s)

    def cancel(self, reason: str | None = None) -> None:
        """Ask for the run to be cancelled."""
        self.client.cancel(self.run_id, reason)

    def signal(self, name: str, payload: Any = None, *, event_id: str | None = None) -> str:
        """Send event ``name`` to the run; returns the event id (send it again to retry safely)."""
        return self.client.signal(self.run_id, name, payload, event_id=event_id)

    def pause(self) -> None:
        """Ask for the run to be paused (``RunStateError`` if it is not runnable)."""
        self.client.pause(self.run_id)

    @overload
    def resume(self) -> None: ...
    @overload
    def resume(
        self,
        node: str,
        *,
        output: Any = None,
        action: str | None = None,
        event_id: str | None = None,
    ) -> str: ...
    def resume(
        self,
        node: str | None = None,
        *,
        output: Any = None,
        action: str | None = None,
        event_id: str | None = None,
    ) -> str | None:
        """Resume the run's parked ``wait`` ``node``, or the paused run (``Client.resume``)."""
        if node is None:
            self.client.resume(self.run_id)
            return None
        return self.client.resume(
            self.run_id, node, output=output, action=action, event_id=event_id
        )

    def retry(self, *from_nodes: str) -> None:
        """Ask for the finished run to be retried from ``from_nodes`` (default: failed nodes)."""
        self.client.retry(self.run_id, *from_nodes)


class Client:
    """Publishes start, cancel and event messages; reads runs from the state store."""

    def __init__(
        self, *, settings: Settings, kafka: KafkaSettings, store: StateStore | None = None
    ) -> None:
        """Use ``settings`` for topics and the store, ``kafka`` to connect."""
        self.settings = settings
        self.kafka = kafka
        self.store = store or open_state(settings)
        if store is None and self.store.auto_migrate:
            # The embedded store: every process may create its schema (idempotent), so a
            # client that waits before the bridge has started does not fail on a missing table.
            self.store.migrate()
        self.queries = Queries(self.store)
        self.commands = Commands(settings=settings, kafka=kafka, queries=self.queries)

    @classmethod
    def from_env(cls) -> Client:
        """A client configured from the environment, like the other processes."""
        return cls(settings=Settings.from_env(), kafka=KafkaSettings.from_env())

    def start(
        self,
        blueprint: str,
        input: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        version: str | None = None,
    ) -> RunHandle:
        """Publish a start message; the run is created by the bridge (idempotent on ``run_id``)."""
        run_id = self.commands.start(blueprint, input, run_id=run_id, version=version)
        return RunHandle(self, run_id)

    def handle(self, run_id: str) -> RunHandle:
        """A handle on an existing run."""
        return RunHandle(self, run_id)

    def cancel(self, run_id: str, reason: str | None = None) -> None:
        """Publish a cancel message for ``run_id`` (a cancel before its start leaves a marker)."""
        self.commands.cancel(run_id, reason)

    def signal(
        self, run_id: str, name: str, payload: Any = None, *, event_id: str | None = None
    ) -> str:
        """Publish event ``name`` for ``run_id``; duplicates of one ``event_id`` are ignored."""
        return self.commands.signal(run_id, name, payload, event_id=event_id)

    def pause(self, run_id: str) -> None:
        """Publish a pause of ``run_id``: no node of it starts until it is resumed.

        Raises:
            RunStateError: no such run, or it is not pending, running or waiting.
        """
        self.commands.pause(run_id, check=True)

    @overload
    def resume(self, run_id: str) -> None: ...
    @overload
    def resume(
        self,
        run_id: str,
        node: str,
        *,
        output: Any = None,
        action: str | None = None,
        event_id: str | None = None,
    ) -> str: ...
    def resume(
        self,
        run_id: str,
        node: str | None = None,
        *,
        output: Any = None,
        action: str | None = None,
        event_id: str | None = None,
    ) -> str | None:
        """Resume ``run_id``: with ``node``, its parked ``wait`` (flowcraft's resume), else the run.

        With ``node``: the node completes with ``output`` and ``action`` chooses its
        edges; returns the event id (one ``event_id`` resumes once). Without: the
        paused run goes on (``pause``).

        Raises:
            RunStateError: no such run, or it has finished; with ``node``, it is not a wait
                or sleep node of the run; without, the run is not paused.
        """
        if node is None:
            self.commands.unpause(run_id, check=True)
            return None
        return self.commands.resume(
            run_id, node, output=output, action=action, event_id=event_id, check=True
        )

    def retry(self, run_id: str, *from_nodes: str) -> None:
        """Publish a retry of finished run ``run_id`` from ``from_nodes`` (a new attempt).

        Raises:
            RunStateError: no such run, not finished, a code workflow run, or no such node.
        """
        self.commands.retry(run_id, from_nodes, check=True)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run as JSON, or None."""
        return self.queries.run(run_id)

    def close(self) -> None:
        """Flush and close the producer."""
        self.commands.close()
