"""``ScyllaStore``: the production backend, on scylla-driver (``scylla://``, ``cassandra://``).

What it guarantees, and how (``docs/state.md`` has the schema and the reasons):

- Every decision is one lightweight transaction (LWT, Paxos) on one partition,
  decided by ``state.rules`` on the rows read and made to hold by the LWT's
  condition: run creation (``IF NOT EXISTS``), run status changes (``IF status
  IN``), node transitions (``IF status IN`` the active statuses;
  ``begin_attempt`` is a compare-and-set on status, attempts and deliveries), a
  join firing (``IF NOT EXISTS`` on the join's node record), parking and waking
  a node (compare-and-set on the node row's token), an event's dedupe and its
  consumption (``IF NOT EXISTS`` and a claim on its inbox row), fences and
  stall claims (compare-and-set on the run row's token). Each node record is a
  partition of its own, so the completions of a fan-out never contend.
- Cassandra has no multi-partition transaction, so a conditional write stores
  its follow-up writes (the rule's change set: successors, skips, arrivals,
  context, outbox, history, the index move) as an ``effects`` blob in the same
  LWT and then applies them. Each follow-up is idempotent. Whoever finds
  effects not yet marked applied (a redelivered task, a reader of that node,
  the next operation on that row) applies them again first, so a crash between
  the LWT and its follow-ups is repaired, and nobody acts on a completion whose
  successors are not written.
- A conditional write that times out is ambiguous: the row is re-read at SERIAL
  (which finishes any Paxos round in flight) and the write counts as applied
  only if the row carries this write's token (``lwt_op``).
- Retention: when a run finishes, its rows are rewritten ``USING TTL``; a live
  run never has a TTL. ``purge_expired`` has nothing to do.

The parts, each a collaborator of the façade below (none calls back into it):
``session`` (per-process state, rows), ``migrate`` (the schema), ``writes`` (staging change sets,
follow-up statements), ``apply`` (applying and repairing effects, the run row's
conditional writes), ``retention``, ``runs``, ``nodes``, ``waits`` (parking,
timers), ``inbox`` (events, suspending), ``index`` and ``outbox`` (reads);
``config``, ``driver``, ``schema``, ``effects`` and ``rows`` are what they say.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from state.records import (
    RUN_ACTIVE,
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
    RunStatus,
    SchemaChange,
    Wakeup,
)
from state.rules.runs import STARTABLE
from state.scylla.apply import Applier
from state.scylla.config import ScyllaConfig, parse_scylla_url
from state.scylla.driver import _Conn
from state.scylla.inbox import Inbox
from state.scylla.index import Index
from state.scylla.migrate import migrate
from state.scylla.nodes import Nodes
from state.scylla.outbox import Outbox
from state.scylla.runs import Runs
from state.scylla.session import Session
from state.scylla.waits import Waits
from state.scylla.workflows import ScyllaWorkflows
from state.scylla.writes import Writes

__all__ = ["ScyllaStore", "open_url"]


class ScyllaStore:
    """A ``StateStore`` on Scylla or Cassandra (scylla-driver), safe across processes and hosts."""

    #: ``flowbridge migrate`` (the Procfile's release step) creates the schema, not each process.
    auto_migrate = False
    #: No transaction spans a node's and its run's partitions (``commit_node``).
    commits_run_end = False

    def __init__(
        self,
        config: ScyllaConfig,
        *,
        retention_s: float | None = None,
        index_lookback_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Use the cluster in ``config``; nothing is connected until first use.

        ``clock`` also stamps the writes sent to the cluster (``USING TIMESTAMP``):
        keep it the wall clock (tests may shift it a little).
        """
        self.session = s = Session(
            config, retention_s=retention_s, index_lookback_s=index_lookback_s, clock=clock
        )
        writes = Writes(s)
        applier = Applier(s, writes)
        waits = Waits(s, writes, applier)
        self._runs = Runs(s, writes, applier)
        self._nodes = Nodes(s, writes, applier)
        self._waits = waits
        self._inbox = Inbox(s, writes, applier, waits)
        self._index = Index(s)
        self._outbox = Outbox(s)
        #: The code workflow tables.
        self.workflows = ScyllaWorkflows(s, writes)

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str], retention_s: float | None = None
    ) -> ScyllaStore:
        """Build a store from ``FLOWBRIDGE_STATE_URL`` (no connection yet).

        ``retention_s`` (e.g. from ``FLOWBRIDGE_RETENTION_DAYS``) wins over the URL's
        ``retention_days``.
        """
        return cls(parse_scylla_url(url, env=env), retention_s=retention_s)

    def __repr__(self) -> str:
        return f"ScyllaStore({self.config.redacted_url()})"

    # --- what the session holds -----------------------------------------------------------
    @property
    def config(self) -> ScyllaConfig:
        """Where the cluster is and how to talk to it."""
        return self.session.config

    @property
    def retention_s(self) -> float:
        """How long finished runs are kept."""
        return self.session.retention_s

    @property
    def index_lookback_s(self) -> float:
        """How far back the status and timer indexes are read."""
        return self.session.index_lookback_s

    @property
    def _ttl(self) -> int:
        return self.session.ttl

    @property
    def _conn(self) -> _Conn | None:
        return self.session.connection

    def _c(self) -> _Conn:
        """This process's connection (tests and tools run statements on it)."""
        return self.session.conn()

    # --- lifecycle ------------------------------------------------------------------------
    def migrate(self) -> SchemaChange:
        """Create keyspace and tables if missing, wait for schema agreement, record the version."""
        return migrate(self._c(), self.config, self.session.clock)

    def close(self) -> None:
        """Shut this process's Cluster down."""
        self.session.close()

    def purge_expired(self, *, limit: int = 1000) -> int:
        """Nothing to do: finished runs expire by TTL (see docs/state.md for the tombstones)."""
        return 0

    # --- runs -----------------------------------------------------------------------------
    def create_run(
        self,
        run: Run,
        *,
        start_nodes: Sequence[str],
        outbox: Sequence[OutboxMessage] = (),
        context: Mapping[str, Any] | None = None,
    ) -> tuple[bool, Run]:
        """Create the run, its start nodes and its context if no run with that id exists."""
        return self._runs.create_run(run, start_nodes=start_nodes, outbox=outbox, context=context)

    def get_run(self, run_id: str, *, snapshot: bool = True) -> Run | None:
        """Read one run (repairing its unapplied effects if they are old)."""
        return self._runs.get_run(run_id, snapshot=snapshot)

    def get_run_and_node(
        self, run_id: str, node_id: str, iteration: int = 0, *, snapshot: bool = True
    ) -> tuple[Run | None, NodeState | None]:
        """The run and one node record, read concurrently (one round trip)."""
        s = self.session
        run_row, node_row = s.run_and_node(run_id, node_id, iteration)
        run = self._runs.run_from(run_id, run_row, snapshot=snapshot)
        return run, self._nodes.node_from(run_id, node_id, iteration, node_row)

    def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[Run]:
        """Recent runs newest first, through the status index."""
        return self._index.list_runs(status=status, limit=limit)

    def set_run_status(self, run_id: str, *, from_: Collection[str], to: str) -> bool:
        """Move the run to ``to`` if its status is in ``from_``."""
        return self._runs.set_run_status(run_id, from_=from_, to=to)

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        output: Any = None,
        error: str | None = None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Move an active run to a terminal status once."""
        return self._runs.finish_run(
            run_id, status=status, output=output, error=error, outbox=outbox
        )

    def cancel_run(
        self,
        run_id: str,
        *,
        reason: str,
        outbox: Sequence[OutboxMessage] = (),
        fence: int | None = None,
    ) -> tuple[bool, Run | None]:
        """Cancel an active run, its active nodes and timers, or leave a marker for its start."""
        return self._runs.cancel_run(run_id, reason=reason, outbox=outbox, fence=fence)

    def advance_fence(self, run_id: str) -> int:
        """Advance the run's fence by one and return it; 0 for no run."""
        return self._runs.advance_fence(run_id)

    def mark_reconciled(
        self,
        run_id: str,
        *,
        stalled_since: float,
        fence: int,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Claim one stall of the run with the jobs it re-emits, once."""
        return self._runs.mark_reconciled(
            run_id, stalled_since=stalled_since, fence=fence, outbox=outbox
        )

    def find_stalled(self, *, status: str, older_than: float, limit: int = 100) -> list[str]:
        """Run ids in ``status`` without progress since ``older_than``."""
        return self._index.find_stalled(status=status, older_than=older_than, limit=limit)

    # --- an operator's actions ------------------------------------------------------------
    def pause_run(self, run_id: str) -> bool:
        """Pause a runnable run once."""
        return self._runs.pause_run(run_id)

    def resume_run(self, run_id: str) -> bool:
        """Resume a paused run once (running, or waiting if no node is pending or running)."""
        return self._runs.resume_run(run_id, busy=lambda: self._waits.run_busy(run_id))

    def restart_rejected(
        self,
        run: Run,
        *,
        start_nodes: Sequence[str],
        outbox: Sequence[OutboxMessage] = (),
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """Replace a rejected start's record with ``run`` and its start nodes, once."""
        return self._runs.restart_rejected(
            run, start_nodes=start_nodes, outbox=outbox, context=context
        )

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
        """Start a finished run's next attempt once, re-running ``from_nodes``."""
        return self._runs.retry_run(
            run_id,
            from_nodes=from_nodes,
            reset=reset,
            expect=expect,
            skipped=skipped,
            arrivals=arrivals,
            outbox=outbox,
        )

    # --- nodes ----------------------------------------------------------------------------
    def get_node(self, run_id: str, node_id: str, iteration: int = 0) -> NodeState | None:
        """Read one node record (applying its unapplied effects first)."""
        return self._nodes.get_node(run_id, node_id, iteration)

    def get_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0
    ) -> dict[str, NodeState]:
        """Read the existing records among ``node_ids``."""
        return self._nodes.get_nodes(run_id, node_ids, iteration)

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
        """Claim a pending node (or, with ``takeover``, a running one; ``create``: a new one)."""
        if start_run:
            # The run and the node are different partitions: no one LWT covers both, so the
            # run's status goes first, as a separate write (what a claim after it always did).
            self._runs.set_run_status(run_id, from_=STARTABLE, to=RunStatus.RUNNING)
        return self._nodes.begin_attempt(
            run_id,
            node_id,
            iteration,
            attempt,
            takeover=takeover,
            create=create,
            claimed_by=claimed_by,
            lease_until=lease_until,
        )

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
        """Move the lease of the attempt ``claimed_by`` holds to ``until`` (one LWT)."""
        return self._nodes.renew_lease(
            run_id, node_id, iteration, attempt=attempt, claimed_by=claimed_by, until=until
        )

    def commit_node(self, completion: NodeCompletion) -> CommitResult:
        """Apply a node completion once (and the run's end it carries, as a second write)."""
        res = self._nodes.commit_node(completion)
        fin = completion.finish
        if fin is None or not res.applied or res.run_status not in RUN_ACTIVE:
            return res
        # No transaction spans the node's and the run's partitions: the run's end is its own
        # conditional write after the commit, as the engine's finish_run after it always was.
        if self.finish_run(
            completion.run_id,
            status=fin.status,
            output=fin.output,
            error=fin.error,
            outbox=fin.outbox,
        ):
            return dataclasses.replace(res, run_status=fin.status)
        return res

    def retry_node(
        self, run_id: str, node_id: str, iteration: int, *, attempt: int, error: str
    ) -> bool:
        """Put an active node back to pending after failed ``attempt``."""
        return self._nodes.retry_node(run_id, node_id, iteration, attempt=attempt, error=error)

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
        """Fail an active node for good; start its fallback, fail the run, or arrive at joins."""
        return self._nodes.fail_node(
            run_id,
            node_id,
            iteration,
            error=error,
            fallback=fallback,
            fail_run=fail_run,
            outbox=outbox,
            skipped=skipped,
            arrivals=arrivals,
        )

    def cancel_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0, *, reason: str
    ) -> list[str]:
        """Cancel the active ones among ``node_ids``; returns them."""
        return self._nodes.cancel_nodes(run_id, node_ids, iteration, reason=reason)

    def fire_join(self, run_id: str, join_id: str, iteration: int = 0) -> bool:
        """Create the join's pending record once."""
        return self._nodes.fire_join(run_id, join_id, iteration)

    def get_arrivals(self, run_id: str, join_id: str, iteration: int = 0) -> dict[str, str]:
        """Read a join's arrival set."""
        return self._nodes.get_arrivals(run_id, join_id, iteration)

    # --- batches --------------------------------------------------------------------------
    def put_batch(self, run_id: str, batch: str, pages: Mapping[int, Sequence[Any]]) -> None:
        """Store pages of a batch."""
        self._runs.put_batch(run_id, batch, pages)

    def get_batch(self, run_id: str, batch: str, pages: Sequence[int]) -> dict[int, list[Any]]:
        """Read pages of a batch."""
        return self._runs.get_batch(run_id, batch, pages)

    # --- waiting --------------------------------------------------------------------------
    def suspend_node(
        self,
        run_id: str,
        node_id: str,
        iteration: int = 0,
        *,
        event: str | None = None,
        due_at: float | None = None,
    ) -> Wakeup | None:
        """Take an event already in the inbox, or park the node on its event and/or timer."""
        return self._inbox.suspend_node(run_id, node_id, iteration, event=event, due_at=due_at)

    def get_wakeup(self, run_id: str, node_id: str, iteration: int = 0) -> Wakeup | None:
        """What woke the node."""
        return self._waits.get_wakeup(run_id, node_id, iteration)

    def deliver_event(
        self, run_id: str, name: str, *, event_id: str, payload: Any = None
    ) -> Delivery:
        """Dedupe on ``event_id``, then wake the oldest waiter or keep the event."""
        return self._inbox.deliver_event(run_id, name, event_id=event_id, payload=payload)

    def fire_timer(
        self,
        run_id: str,
        node_id: str,
        iteration: int = 0,
        *,
        now: float,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Wake a parked node whose timer is due, once."""
        return self._waits.fire_timer(run_id, node_id, iteration, now=now, outbox=outbox)

    def due_timers(self, *, now: float, limit: int = 500) -> list[DueTimer]:
        """Due timers from the due buckets of the timer index."""
        return self._waits.due_timers(now=now, limit=limit)

    # --- context, history, outbox ---------------------------------------------------------
    def get_context(self, run_id: str) -> dict[str, Any]:
        """Read the run context."""
        return self._runs.get_context(run_id)

    def append_history(
        self, run_id: str, kind: str, *, node_id: str | None = None, data: Any = None
    ) -> None:
        """Append one history event."""
        self._runs.append_history(run_id, kind, node_id=node_id, data=data)

    def get_history(self, run_id: str) -> list[HistoryEvent]:
        """Read the history in commit order."""
        return self._runs.get_history(run_id)

    def pending_outbox(
        self, *, limit: int = 500, shards: Collection[int] | None = None
    ) -> list[OutboxMessage]:
        """Unpublished outbox rows, oldest first (of ``shards`` when given)."""
        return self._outbox.pending_outbox(limit=limit, shards=shards)

    def delete_outbox(self, ids: Sequence[str]) -> None:
        """Forget published outbox rows."""
        self._outbox.delete_outbox(ids)


def open_url(
    url: str,
    *,
    env: Mapping[str, str],
    retention_s: float | None,
    clock: Callable[[], float] | None,
) -> ScyllaStore:
    """Open ``scylla://`` or ``cassandra://`` (the registry's opener).

    ``clock`` is not used: this store stamps its writes (``USING TIMESTAMP``)
    with the wall clock, so a clock shifted for a drill of long timers must not
    reach it.
    """
    return ScyllaStore.from_url(url, env=env, retention_s=retention_s)
