"""The ``StateStore`` protocol: every operation a backend must provide, with its conditions.

Each write that decides something (run creation, node completion, a join
firing, a run status change) is conditional, so that a redelivered Celery task
or a second reconciler cannot apply it twice; what each one decides is
``state.rules``. Backends (``state.backends`` picks one by URL scheme):
``state.sqlite`` (the embedded default, one host), ``state.scylla``
(Scylla/Cassandra) and ``state.memory`` (one process: tests).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from state.records import (
    Arrival,
    CommitResult,
    Delivery,
    DueTimer,
    HistoryEvent,
    NodeCompletion,
    NodeState,
    OutboxMessage,
    RetryOutcome,
    Run,
    SchemaChange,
    Wakeup,
)
from state.workflows import WorkflowStore

__all__ = ["StateStore"]


@runtime_checkable
class StateStore(Protocol):
    """Run, node, context, history and outbox records, with conditional writes."""

    #: The code workflow tables (``state.workflows``).
    workflows: WorkflowStore

    #: Whether each process creates the schema itself (``migrate`` when it opens the store):
    #: True for SQLite and memory; False for Scylla, where ``flowbridge migrate`` is a release step.
    auto_migrate: bool
    #: Whether ``commit_node`` writes a completion's ``finish`` in the completion's own
    #: transaction (SQLite, memory); the engine reads ahead for it only then. Scylla applies
    #: it as a second write, which saves nothing, so the engine finishes the run after.
    commits_run_end: bool

    # --- lifecycle -------------------------------------------------------
    def migrate(self) -> SchemaChange:
        """Create or upgrade the schema idempotently, and say which of the two it did."""

    def close(self) -> None:
        """Release connections held by this process."""

    # --- runs ------------------------------------------------------------
    def create_run(
        self,
        run: Run,
        *,
        start_nodes: Sequence[str],
        outbox: Sequence[OutboxMessage] = (),
        context: Mapping[str, Any] | None = None,
    ) -> tuple[bool, Run]:
        """Create the run and its start nodes' ``pending`` records if it does not exist.

        ``context`` is the run context it starts with (one row per key, as later
        writes). Returns ``(created, stored_run)``. When a run with that id
        exists (a redelivered start, or a cancel marker left by a cancel that
        came first) nothing is written and the stored run is returned.
        """

    def get_run(self, run_id: str, *, snapshot: bool = True) -> Run | None:
        """Read one run; with ``snapshot=False`` its blueprint snapshot is left out (``{}``).

        The snapshot never changes, so callers that cached the parsed blueprint
        skip decoding it again (it dominated a wide fan-out's worker time).
        """

    def get_run_and_node(
        self, run_id: str, node_id: str, iteration: int = 0, *, snapshot: bool = True
    ) -> tuple[Run | None, NodeState | None]:
        """``get_run`` and ``get_node`` at once (concurrently, where a store can).

        What an engine task reads first: the run (is it live, not paused?) and its node.
        """

    def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[Run]:
        """List recent runs, newest first, optionally with one status."""

    def set_run_status(self, run_id: str, *, from_: Collection[str], to: str) -> bool:
        """Move the run to ``to`` if its status is in ``from_``; True if applied."""

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        output: Any = None,
        error: str | None = None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Move an active run to a terminal status once; the outbox rows go with it."""

    def cancel_run(
        self,
        run_id: str,
        *,
        reason: str,
        outbox: Sequence[OutboxMessage] = (),
        fence: int | None = None,
    ) -> tuple[bool, Run | None]:
        """Cancel an active run, its active nodes and timers, or leave a marker if it is unknown.

        Returns ``(applied, run_before)``; ``run_before`` is None when a marker
        was written. A finished run is left alone (``applied`` False). With a
        ``fence`` older than the run's, raises ``StaleFenceError``.
        """

    # --- an operator's actions (``state.rules.operator``) --------------------
    def pause_run(self, run_id: str) -> bool:
        """Pause a pending, running or waiting run once; True if this call paused it."""

    def resume_run(self, run_id: str) -> bool:
        """Resume a paused run once: ``running``, or ``waiting`` if no node is pending/running."""

    def restart_rejected(
        self,
        run: Run,
        *,
        start_nodes: Sequence[str],
        outbox: Sequence[OutboxMessage] = (),
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """Replace the record a rejected start left (failed, no snapshot) with ``run``, once.

        ``start_nodes``, ``outbox`` and ``context`` are as ``create_run``'s.

        True only for the caller that replaced it; a run that ever started is never
        replaced (``retry_run`` is for those).
        """

    def retry_run(
        self,
        run_id: str,
        *,
        from_nodes: Sequence[str],
        reset: Sequence[str],
        expect: Mapping[str, str],
        skipped: Sequence[str] = (),
        arrivals: Sequence[Arrival] = (),
        outbox: Sequence[OutboxMessage] = (),
    ) -> RetryOutcome:
        """Start a finished run's next attempt once, re-running ``from_nodes`` (iteration 0).

        The records in ``reset`` are deleted with their waits and the arrivals
        they made, then ``from_nodes`` are created ``pending``, and ``skipped``
        records and ``arrivals`` are added where missing (what kept nodes that
        completed on the finished run would have written); every other record
        is kept. ``expect`` maps kept records to the status the caller
        read (``""``: no record); if one has moved since (a node in flight
        completed), nothing is written and ``moved`` names them. The run's
        attempt grows by one; a finished run's retention expiry is lifted.
        """

    # --- nodes -----------------------------------------------------------
    def get_node(self, run_id: str, node_id: str, iteration: int = 0) -> NodeState | None:
        """Read one node record."""

    def get_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0
    ) -> dict[str, NodeState]:
        """Read the records of the given nodes that exist."""

    def begin_attempt(
        self,
        run_id: str,
        node_id: str,
        iteration: int,
        attempt: int,
        *,
        takeover: bool = False,
        create: bool = False,
        claimed_by: str | None = None,
        lease_until: float | None = None,
        start_run: bool = False,
    ) -> NodeState | None:
        """Claim a node for ``attempt``: ``pending`` to ``running``, and count the delivery.

        The claim records ``claimed_by`` and its lease ``lease_until`` in the same
        write (both None: no lease; a previous holder's lease is cleared).

        With ``create`` a node without a record gets one (``pending``, then
        claimed): a batch item, whose record its own task creates.

        With ``start_run`` a ``pending`` or ``waiting`` run moves to ``running``
        when the claim applies, in the claim's own transaction (SQLite, memory);
        Scylla has no transaction across the two partitions and writes the run's
        status just before the claim, as a separate conditional write.

        A node already ``running`` is claimed again only with ``takeover`` (a
        redelivery after its worker was lost, or a stale record), so a
        concurrent duplicate task gets None and runs nothing. ``deliveries``
        counts deliveries of the same attempt (reset when the attempt number
        grows). Returns the updated record, or None when the node is not
        claimable (running without takeover, completed, failed, skipped,
        cancelled or absent).
        """

    def renew_lease(
        self,
        run_id: str,
        node_id: str,
        iteration: int = 0,
        *,
        attempt: int,
        claimed_by: str,
        until: float,
    ) -> bool:
        """Move the running attempt's lease to ``until``, only while ``claimed_by`` holds it.

        Conditional (``state.rules.leases.renewed``): the node is ``running`` at
        ``attempt`` and claimed by ``claimed_by``. False when the attempt ended or
        a takeover claimed it for another delivery: this holder lost the lease.
        It is not progress: the node's ``updated_at`` and the run's are left alone.
        """

    def commit_node(self, completion: NodeCompletion) -> CommitResult:
        """Apply a node completion once, with its successors, arrivals, context and outbox.

        Conditional on the node being active. When the run is already
        finished, only the node's own record is written: nothing that would
        restart the run.
        """

    def retry_node(
        self, run_id: str, node_id: str, iteration: int, *, attempt: int, error: str
    ) -> bool:
        """Put an active node back to ``pending`` after a failed attempt."""

    def fail_node(
        self,
        run_id: str,
        node_id: str,
        iteration: int,
        *,
        error: str,
        fallback: str | None = None,
        fail_run: bool = True,
        outbox: Sequence[OutboxMessage] = (),
        skipped: Sequence[str] = (),
        arrivals: Sequence[Arrival] = (),
    ) -> bool:
        """Fail an active node for good; start its fallback, or fail the run with it.

        With ``fail_run`` False and no fallback (a failure a join tolerates),
        ``skipped`` records and join ``arrivals`` are written instead, once.
        """

    def cancel_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0, *, reason: str
    ) -> list[str]:
        """Cancel those of ``node_ids`` that are active (a race's losers); returns them."""

    def fire_join(self, run_id: str, join_id: str, iteration: int = 0) -> bool:
        """Create the join node's ``pending`` record once; True only for the caller that fired."""

    def get_arrivals(self, run_id: str, join_id: str, iteration: int = 0) -> dict[str, str]:
        """Read a join's arrival set: predecessor id to outcome."""

    # --- waiting: timers and events ------------------------------------
    def suspend_node(
        self,
        run_id: str,
        node_id: str,
        iteration: int = 0,
        *,
        event: str | None = None,
        due_at: float | None = None,
    ) -> Wakeup | None:
        """Park a running node until ``event`` arrives or ``due_at`` passes, once.

        Registers the wait and/or the timer and moves the node to ``waiting``.
        If an unconsumed event named ``event`` is already in the run's inbox, it
        is consumed by this node instead, the node stays ``running`` and the
        event is returned. A node suspended before keeps its first timer (a
        re-run never pushes its deadline later). Returns None once parked.
        """

    def get_wakeup(self, run_id: str, node_id: str, iteration: int = 0) -> Wakeup | None:
        """What woke the node: the event it consumed, else its fired timer, else None."""

    def deliver_event(
        self, run_id: str, name: str, *, event_id: str, payload: Any = None
    ) -> Delivery:
        """Deliver an event: dedupe on ``event_id``, wake the node waiting for ``name`` or keep it.

        Waking is conditional (``waiting`` to ``pending``) and consumes the event
        for that node; an event nobody waits for stays in the run's inbox for a
        later ``suspend_node``.
        """

    def fire_timer(
        self,
        run_id: str,
        node_id: str,
        iteration: int = 0,
        *,
        now: float,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Wake a waiting node whose timer is due (``waiting`` to ``pending``), once."""

    def due_timers(self, *, now: float, limit: int = 500) -> list[DueTimer]:
        """Unfired timers due by ``now``, through a by-due-time index (hints)."""

    # --- fences and reconciliation --------------------------------------
    def advance_fence(self, run_id: str) -> int:
        """Advance the run's fence by one (a conditional write) and return the new value."""

    def mark_reconciled(
        self,
        run_id: str,
        *,
        stalled_since: float,
        fence: int,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Claim one stall of a run for re-emission, with the jobs to re-emit, once.

        Applies only if the run's last progress is still ``stalled_since`` and
        that stall was not reconciled before; raises ``StaleFenceError`` if
        ``fence`` is older than the run's fence (a lock holder that lost its lock).
        """

    # --- batches -------------------------------------------------------
    def put_batch(self, run_id: str, batch: str, pages: Mapping[int, Sequence[Any]]) -> None:
        """Store pages of a batch (a list kept in pages, never in one row); upserts by page."""

    def get_batch(self, run_id: str, batch: str, pages: Sequence[int]) -> dict[int, list[Any]]:
        """Read pages of a batch: page number to its items (missing pages are left out)."""

    # --- context and history --------------------------------------------
    def get_context(self, run_id: str) -> dict[str, Any]:
        """Read the run context: one value per key."""

    def append_history(
        self, run_id: str, kind: str, *, node_id: str | None = None, data: Any = None
    ) -> None:
        """Append one event to the run's history."""

    def get_history(self, run_id: str) -> list[HistoryEvent]:
        """Read the run's history in commit order."""

    # --- reconciliation and outbox --------------------------------------
    def find_stalled(self, *, status: str, older_than: float, limit: int = 100) -> list[str]:
        """Run ids with ``status`` and no progress since ``older_than`` (re-checked index hints)."""

    def purge_expired(self, *, limit: int = 1000) -> int:
        """Remove finished runs past retention where the backend does not expire them itself."""

    def pending_outbox(
        self, *, limit: int = 500, shards: Collection[int] | None = None
    ) -> list[OutboxMessage]:
        """Outbox rows not yet published, oldest first; only of ``shards`` when given.

        A row's shard is ``state.keys.outbox_shard(row.id)``; ``shards=()`` reads nothing.
        """

    def delete_outbox(self, ids: Sequence[str]) -> None:
        """Forget outbox rows that were published."""
