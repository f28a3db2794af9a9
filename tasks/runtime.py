"""What the engine needs in one process: settings, clock, the state store, registries, the port.

A ``Runtime`` holds no Celery or Redis code: it reaches them only through its
``TaskPort`` (``tasks.port``). Workers and the bridge get one from
``tasks.worker.runtime_from_env``; ``flowbridge.testing`` builds one on the
in-memory store with an in-process port.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from state import open_store
from state.protocol import StateStore
from state.records import NodeState, Run
from tasks.blueprint import Blueprint
from tasks.constants import SNAPSHOT_CACHE_SIZE
from tasks.metrics import Metrics, NullMetrics
from tasks.port import ActivityTask, NodeTask, TaskPort
from tasks.registry import BlueprintRegistry, NodeRegistry, blueprints, nodes
from tasks.settings import Settings

__all__ = ["InlineBudget", "Runtime", "open_state", "settings_clock"]


@dataclass
class InlineBudget:
    """How much more of a chain one task may run itself before it hands on through Celery.

    ``FLOWBRIDGE_INLINE_NODES`` nodes in all and ``FLOWBRIDGE_INLINE_BUDGET_S`` seconds
    (checked before each next node, so a slow node is not cut short): a long chain then
    leaves the worker to other runs' tasks queued behind it. The same for a code
    workflow's sequential activities (``tasks.workflow.dispatch``).
    """

    #: Nodes this task may still run after the one in hand.
    nodes: int
    #: ``time.monotonic()`` after which it runs no further node.
    deadline: float
    #: Nodes it ran after the first (for metrics and tests).
    spent: int = 0
    #: A code workflow's next activity, kept back by the dispatch for this task to run.
    held: ActivityTask | None = None
    #: The Celery task id of a redelivered task: a node its dead predecessor claimed inline
    #: (``claimed_by`` ends with it) is this delivery's to take over.
    redelivery_of: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> InlineBudget | None:
        """A fresh budget for one task, or None when inline successors are off."""
        if settings.inline_nodes <= 1 or settings.inline_budget_s <= 0:
            return None
        return cls(
            nodes=settings.inline_nodes - 1,
            deadline=time.monotonic() + settings.inline_budget_s,
        )

    def allows(self) -> bool:
        """Whether one more node may run in this task."""
        return self.nodes > 0 and time.monotonic() < self.deadline

    def owns(self, node: NodeState) -> bool:
        """Whether ``node`` is running under this task's id (its dead copy ran it inline)."""
        claimed = node.claimed_by or ""
        return self.redelivery_of is not None and claimed.endswith(f":{self.redelivery_of}")

    def spend(self) -> None:
        """One more node runs in this task."""
        self.nodes -= 1
        self.spent += 1


def settings_clock(settings: Settings) -> Callable[[], float] | None:
    """Wall time shifted by ``FLOWBRIDGE_CLOCK_OFFSET_S``; None when there is no offset."""
    offset = settings.clock_offset_s
    return (lambda: time.time() + offset) if offset else None


def open_state(settings: Settings, clock: Callable[[], float] | None = None) -> StateStore:
    """The state store ``settings`` name (opened lazily), on ``clock`` when one is given."""
    return open_store(
        settings.state_url,
        env=settings.env,
        retention_s=settings.retention_days * 86400,
        clock=clock or settings_clock(settings),
    )


class Runtime:
    """The engine's view of one process; created after fork, never shared across one."""

    def __init__(
        self,
        settings: Settings,
        *,
        port: TaskPort,
        store: StateStore | None = None,
        clock: Callable[[], float] | None = None,
        node_registry: NodeRegistry | None = None,
        blueprint_registry: BlueprintRegistry | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """Use ``port`` to reach the queue; open (lazily) the store ``settings`` name."""
        self.settings = settings
        #: The engine's clock: wall time, shifted by FLOWBRIDGE_CLOCK_OFFSET_S (or injected).
        self.clock: Callable[[], float] = clock or settings_clock(settings) or time.time
        self.store: StateStore = store or open_state(settings, clock)
        self.port = port
        self.nodes: NodeRegistry = node_registry or nodes
        self.blueprints: BlueprintRegistry = blueprint_registry or blueprints
        #: Where the engine reports what it counts (a process installs its exporter).
        self.metrics: Metrics = metrics or NullMetrics()
        self._snapshots: OrderedDict[str, Blueprint] = OrderedDict()
        self._lock = threading.Lock()

    def ensure_schema(self) -> None:
        """Create an embedded store's schema on start; Scylla's is the ``release:`` step's job."""
        if self.store.auto_migrate:
            self.store.migrate()

    def load_run(self, run_id: str) -> tuple[Run, Blueprint | None] | None:
        """Read a run and its blueprint, decoding the snapshot only on a cache miss."""
        with self._lock:
            bp = self._snapshots.get(run_id)
        run = self.store.get_run(run_id, snapshot=bp is None)
        if run is None:
            return None
        if bp is None:
            # A cancel marker (a cancel before its start) has no snapshot and no blueprint.
            return run, (self.blueprint_of(run) if run.snapshot else None)
        return run, bp

    def load_task(
        self, run_id: str, node_id: str, iteration: int
    ) -> tuple[Run, Blueprint | None, NodeState | None] | None:
        """``load_run`` and the node's record, read together (a node task's first read)."""
        with self._lock:
            bp = self._snapshots.get(run_id)
        run, node = self.store.get_run_and_node(run_id, node_id, iteration, snapshot=bp is None)
        if run is None:
            return None
        if bp is None:
            return run, (self.blueprint_of(run) if run.snapshot else None), node
        return run, bp, node

    def blueprint_of(self, run: Run) -> Blueprint:
        """The blueprint snapshot the run started with (immutable, so cached per run)."""
        with self._lock:
            bp = self._snapshots.get(run.run_id)
            if bp is not None:
                self._snapshots.move_to_end(run.run_id)
                return bp
        snapshot = run.snapshot
        if not snapshot:
            # Read without its snapshot, and evicted meanwhile: read it now.
            full = self.store.get_run(run.run_id)
            snapshot = full.snapshot if full is not None else {}
        bp = Blueprint.from_dict(snapshot)
        with self._lock:
            self._snapshots[run.run_id] = bp
            if len(self._snapshots) > SNAPSHOT_CACHE_SIZE:
                self._snapshots.popitem(last=False)
        return bp

    def node_task(
        self,
        bp: Blueprint,
        run_id: str,
        node_id: str,
        *,
        iteration: int = 0,
        attempt: int = 1,
        countdown: float | None = None,
        wake: bool = False,
        branch: bool = False,
        run_attempt: int = 1,
        item: int | None = None,
    ) -> NodeTask:
        """The task of one node attempt, with the node's timeout as its time limit."""
        return NodeTask(
            run_id=run_id,
            node_id=node_id,
            iteration=iteration,
            attempt=attempt,
            countdown=countdown,
            wake=wake,
            timeout_s=bp.node(node_id).config.timeout_s,
            branch=branch,
            run_attempt=run_attempt,
            item=item,
        )

    def dispatch(
        self,
        bp: Blueprint,
        run_id: str,
        node_id: str,
        *,
        iteration: int = 0,
        attempt: int = 1,
        countdown: float | None = None,
        wake: bool = False,
        run_attempt: int = 1,
    ) -> None:
        """Send one node attempt to its run's queue."""
        self.port.dispatch(
            self.node_task(
                bp,
                run_id,
                node_id,
                iteration=iteration,
                attempt=attempt,
                countdown=countdown,
                wake=wake,
                run_attempt=run_attempt,
            )
        )

    def notify_outbox(self) -> None:
        """Wake the outbox relay (rows were committed)."""
        self.port.notify_outbox()
