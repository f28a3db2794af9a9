"""Run blueprints and workflows in your tests: one process, no Kafka, Redis or worker, virtual time.

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

Code workflows (``@workflow``) run the same way: activities in this process,
``ctx.sleep`` on the virtual clock, ``signal`` for ``ctx.wait_event``, ``ref``
or ``kafka_workflow`` for kafka-workflow's messages. ``replay`` checks saved
histories of live runs against the code you are about to deploy.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, overload

from bridge.api.views import history_json, run_json
from bridge.kafka_workflow import apply_kw, parse_kw
from bridge.settings import BridgeSettings
from state import open_store
from state.constants import RUN_TERMINAL
from state.errors import FlowbridgeError
from state.protocol import StateStore
from tasks.blueprint import Blueprint, check
from tasks.engine import resume_node, start_run
from tasks.inprocess import InProcessPort, Published, VirtualClock, run_queued
from tasks.lifecycle import cancel, deliver_event, pause, resume_ref, retry, start, unpause
from tasks.loading import known_uses
from tasks.reconciler import reconcile_once
from tasks.registry import BlueprintRegistry, NodeRegistry, blueprints, nodes
from tasks.runtime import Runtime
from tasks.settings import Settings
from tasks.workflow.replay import ReplayReport, export_history, load_export
from tasks.workflow.replay import replay as replay_history

__all__ = ["Published", "ReplayReport", "Runner", "RunnerError", "VirtualClock", "replay"]

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
        env_all = {**(env or {})}
        self._max_message_bytes = BridgeSettings.from_env(env_all).max_message_bytes
        self._kw_records = 0
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
        """Create a run of a blueprint or a code workflow; with ``drain``, run it as far as it goes.

        Returns the run id.
        """
        run_input = {} if input is None else input
        run_id = run_id or str(uuid.uuid4())
        if isinstance(blueprint, Blueprint) or blueprint in self._blueprint_ids():
            bp = (
                blueprint
                if isinstance(blueprint, Blueprint)
                else self._blueprint(blueprint, version)
            )
            check(bp, known_uses=known_uses() | self.rt.nodes.names())
            _, run = start_run(self.rt, bp, run_input, run_id=run_id)
        else:
            _, run = start(self.rt, blueprint, run_input, run_id=run_id, version=version)
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

    def ref(self, run_id: str, ref_id: str, value: Any = None, *, error: Any = None) -> str:
        """Resume a code workflow's ``ctx.ref(ref_id)`` (kafka-workflow's message) and drain."""
        delivery = resume_ref(
            self.rt, run_id, ref_id, key=str(uuid.uuid4()), value=value, error=error
        )
        self.drain()
        return delivery.outcome

    def kafka_workflow(
        self, key: str, value: str | bytes, *, workflow: str | None = None, drain: bool = True
    ) -> None:
        """Feed one record of kafka-workflow's protocol (``new:{json}``, ``{"ref": ...}``).

        It is handled as the bridge handles one on ``workflow-resume``: ``key`` is the
        run id, ``workflow`` stands for the ``flowbridge-workflow`` header (default
        ``FLOWBRIDGE_KW_WORKFLOW`` of ``env``). What the bridge would dead-letter raises
        ``bridge.errors.MessageError`` with the reason.
        """
        raw = value.encode() if isinstance(value, str) else value
        headers = [] if workflow is None else [("flowbridge-workflow", workflow.encode())]
        self._kw_records += 1
        msg = parse_kw(
            raw,
            key=key.encode(),
            headers=headers,
            default_workflow=self.rt.settings.kw_workflow,
            max_bytes=self._max_message_bytes,
        )
        apply_kw(self.rt, msg, where=f"runner:{self._kw_records}")
        if drain:
            self.drain()

    @overload
    def resume(self, run_id: str) -> bool: ...
    @overload
    def resume(
        self,
        run_id: str,
        node_id: str,
        *,
        output: Any = None,
        action: str | None = None,
        event_id: str | None = None,
    ) -> str: ...
    def resume(
        self,
        run_id: str,
        node_id: str | None = None,
        *,
        output: Any = None,
        action: str | None = None,
        event_id: str | None = None,
    ) -> str | bool:
        """Resume a parked ``wait`` (or ``sleep``) with an output and action, and drain.

        Returns the delivery's outcome (``matched``, ``stored``, ...). Without
        ``node_id``: resume the paused run and drain; whether it applied.
        """
        if node_id is None:
            applied = unpause(self.rt, run_id)
            self.drain()
            return applied
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
        applied = cancel(self.rt, run_id, reason)
        self.drain()
        return applied

    def retry(self, run_id: str, *from_nodes: str) -> int:
        """Retry a finished run from ``from_nodes`` (default: its failed nodes), drain; attempt."""
        attempt = retry(self.rt, run_id, list(from_nodes) or None)
        self.drain()
        return attempt

    def pause(self, run_id: str) -> bool:
        """Pause the run (no node starts until ``resume``) and drain; whether it applied."""
        applied = pause(self.rt, run_id)
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

    def export(self, run_id: str) -> dict[str, Any]:
        """A code workflow run's history as ``flowbridge replay --save`` writes it."""
        return export_history(self.store, run_id)

    # --- internals -------------------------------------------------------------------------
    def _blueprint_ids(self) -> set[str]:
        return {bp.id for bp in self.rt.blueprints.all()}

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
            cancel(self.rt, str(value["run_id"]), str(value.get("reason") or "cancelled"))
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


def replay(source: str | Path | Mapping[str, Any]) -> ReplayReport:
    """Replay a saved history (a file from ``flowbridge replay --save``, or ``Runner.export``).

    Against the workflows registered in this process: ``report.ok`` is False, with
    the activation and command that diverge, if a deploy of this code would block
    that run. Keep files of live runs' histories and replay them in your tests.
    """
    doc = source if isinstance(source, Mapping) else load_export(source)
    return replay_history(doc)
