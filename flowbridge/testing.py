"""Run blueprints in your own tests: one process, no Kafka, Redis or worker, a virtual clock.

    from flowbridge.testing import Runner

    def test_an_order_is_charged():
        runner = Runner()                       # your @node functions and blueprints
        run = runner.run("order", {"items": [{"price": 5}]})
        assert run["status"] == "completed"

The engine is the production one: claims, retries with their backoff, joins,
fallbacks, timers, events, cancellation and the run JSON behave as they do on
Celery. Tasks run one at a time in this process instead, the state lives in an
in-memory store (or the one you pass), and time is virtual: a retry's backoff
or a ``sleep`` of a day is skipped, not waited for. What Kafka would receive
(``ctx.emit`` values, ``run.*`` events) is collected in ``published``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from bridge.api.views import history_json, run_json
from state import open_store
from state.constants import RUN_TERMINAL
from state.errors import FlowbridgeError
from state.protocol import StateStore
from tasks.blueprint import Blueprint, check
from tasks.engine import cancel_run, deliver_event, resume_node, start_run
from tasks.inprocess import InProcessPort, Published, VirtualClock, run_queued
from tasks.loading import known_uses
from tasks.reconciler import reconcile_once
from tasks.registry import BlueprintRegistry, NodeRegistry, blueprints, nodes
from tasks.runtime import Runtime
from tasks.settings import Settings

__all__ = ["Published", "Runner", "RunnerError", "VirtualClock"]

#: Tasks one ``drain`` runs at most: a run that keeps scheduling work forever stops here.
MAX_STEPS = 100_000
#: The runner's Redis visibility timeout: none exists, so every timer gets a wake-up call.
_NO_VISIBILITY_LIMIT_S = 10 * 365 * 86400.0


class RunnerError(FlowbridgeError):
    """The in-process runner was asked for something it cannot do (an unknown run, a loop)."""


class Runner:
    """A flowbridge deployment in one process, for tests: start runs, drive them, look inside."""

    def __init__(
        self,
        *,
        store: StateStore | None = None,
        node_registry: NodeRegistry | None = None,
        blueprint_registry: BlueprintRegistry | None = None,
        clock: VirtualClock | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Use the process's registries (``@node``, ``register_blueprint``) unless given others.

        ``env`` sets flowbridge settings (``FLOWBRIDGE_MAX_DELIVERIES``, ...); the
        process environment is not read, so a test behaves the same everywhere.
        """
        self.clock = clock or VirtualClock()
        settings = Settings.from_env(
            {
                "FLOWBRIDGE_STATE_URL": f"memory://runner-{uuid.uuid4().hex}",
                "FLOWBRIDGE_VISIBILITY_TIMEOUT_S": str(_NO_VISIBILITY_LIMIT_S),
                **(env or {}),
            }
        )
        store = store or open_store(settings.state_url, clock=self.clock)
        store.migrate()
        self.port = InProcessPort(store, self.clock, on_record=self._on_record)
        self.rt = Runtime(
            settings,
            port=self.port,
            store=store,
            clock=self.clock,
            node_registry=node_registry or nodes,
            blueprint_registry=blueprint_registry or blueprints,
        )

    @property
    def store(self) -> StateStore:
        """The state store the runs live in."""
        return self.rt.store

    @property
    def published(self) -> list[Published]:
        """Every record the outbox relay would have sent to Kafka, in commit order."""
        return self.port.published

    # --- driving runs ----------------------------------------------------------------------
    def start(
        self,
        blueprint: str | Blueprint,
        input: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        version: str | None = None,
        drain: bool = True,
    ) -> str:
        """Create a run and (with ``drain``) run it until it has nothing to do now; its id."""
        bp = blueprint if isinstance(blueprint, Blueprint) else self._blueprint(blueprint, version)
        check(bp, known_uses=known_uses() | self.rt.nodes.names())
        _, run = start_run(self.rt, bp, {} if input is None else input, run_id=run_id)
        if drain:
            self.drain()
        return run.run_id

    def run(
        self,
        blueprint: str | Blueprint,
        input: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """Start a run and drive it as far as it goes, skipping time; the run as JSON.

        A run that waits for an event comes back ``waiting``: ``signal`` it, then
        ``advance`` or ``drain`` again.
        """
        run_id = self.start(blueprint, input, run_id=run_id, version=version, drain=False)
        self.drain(advance=True)
        return self.result(run_id)

    def drain(self, *, advance: bool = False, max_steps: int = MAX_STEPS) -> int:
        """Run queued tasks that are due; with ``advance``, skip time to each next one too.

        Returns how many tasks ran. Raises ``RunnerError`` after ``max_steps``.
        """
        steps = 0
        while (item := self.port.pop_due(advance=advance)) is not None:
            run_queued(self.port, item, self.rt)
            self.port.notify_outbox()
            steps += 1
            if steps >= max_steps:
                raise RunnerError(f"still busy after {max_steps} tasks: a run that never ends?")
        return steps

    def advance(self, delta: timedelta | float) -> int:
        """Move the clock forward and run what became due (timers, retries); tasks run."""
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        self.clock.advance(seconds)
        return self.drain()

    def signal(
        self, run_id: str, name: str, payload: Any = None, *, event_id: str | None = None
    ) -> str:
        """Deliver event ``name`` to the run (dedupe on ``event_id``) and drain; the outcome."""
        delivery = deliver_event(
            self.rt, run_id, name, event_id=event_id or str(uuid.uuid4()), payload=payload
        )
        self.drain()
        return delivery.outcome

    def resume(
        self,
        run_id: str,
        node_id: str,
        *,
        output: Any = None,
        action: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Resume a parked ``wait`` (or ``sleep``) with an output and action, and drain."""
        delivery = resume_node(
            self.rt, run_id, node_id, output=output, action=action, event_id=event_id
        )
        self.drain(advance=True)
        return delivery.outcome

    def batch(self, run_id: str, node_id: str) -> list[Any]:
        """A gather's outputs (its output is a reference to pages of them): the list."""
        from tasks.engine.batch import resolve_ref

        rec = self.store.get_node(run_id, node_id)
        if rec is None:
            raise RunnerError(f"run {run_id!r} has no record of node {node_id!r}")
        return list(resolve_ref(self.rt, rec.output))

    def cancel(self, run_id: str, reason: str = "cancelled") -> bool:
        """Cancel the run (revoking its queued tasks) and drain; whether it applied."""
        applied = cancel_run(self.rt, run_id, reason)
        self.drain()
        return applied

    def reconcile(self) -> dict[str, int]:
        """One reconciler pass, as beat would run it, then drain."""
        report = reconcile_once(self.rt)
        self.drain()
        return report

    # --- looking inside --------------------------------------------------------------------
    def result(self, run_id: str) -> dict[str, Any]:
        """The run as JSON (the shape ``flowbridge status --json`` prints)."""
        run = self.store.get_run(run_id)
        if run is None:
            raise RunnerError(f"no run {run_id!r}")
        return run_json(self.store, run)

    def finished(self, run_id: str) -> bool:
        """Whether the run has completed, failed or been cancelled."""
        return self.result(run_id)["status"] in RUN_TERMINAL

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """The run's history (time, kind, node, data), in commit order."""
        return history_json(self.store.get_history(run_id))

    def emitted(self, topic: str | None = None) -> list[Any]:
        """Values published by ``ctx.emit`` (and ``run.*`` events), optionally of one topic."""
        return [p.value for p in self.published if topic is None or p.topic == topic]

    # --- internals -------------------------------------------------------------------------
    def _blueprint(self, blueprint_id: str, version: str | None) -> Blueprint:
        return self.rt.blueprints.get(blueprint_id, version)

    def _on_record(self, record: Published) -> None:
        """Apply what the bridge would of a record on our topics: node, cancel, event jobs.

        The reconciler re-emits node jobs; a finishing child run tells its parent with
        an event, and a finishing parent cancels its children with cancel jobs.
        """
        value = record.value
        if not isinstance(value, dict):
            return
        settings = self.rt.settings
        if record.topic == settings.topic("events") and value.get("type") == "event":
            deliver_event(
                self.rt,
                str(value["run_id"]),
                str(value["name"]),
                event_id=str(value.get("event_id") or record.id),
                payload=value.get("payload"),
            )
            return
        if record.topic != settings.topic("jobs"):
            return
        if value.get("type") == "cancel":
            cancel_run(self.rt, str(value["run_id"]), str(value.get("reason") or "cancelled"))
            return
        if value.get("type") != "node":
            return
        loaded = self.rt.load_run(str(value["run_id"]))
        if loaded is not None and loaded[1] is not None and not loaded[0].terminal:
            self.rt.dispatch(
                loaded[1],
                loaded[0].run_id,
                str(value["node"]),
                iteration=int(value.get("iteration", 0)),
                attempt=int(value.get("attempt", 1)),
            )
