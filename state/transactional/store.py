"""The ``StateStore`` writes of a store with atomic transactions: read, rule, write, commit.

Each operation opens one transaction, reads the rows its rule needs through
the backend's primitives (``Txn``), asks ``state.rules`` what to do, and writes
the change set through the same primitives before the transaction commits.
SQLite's transaction is ``BEGIN IMMEDIATE``, the memory store's is its lock,
so a timer and an event racing for one wait, two reconcilers claiming one
stall, or two deliveries of one task are serialised: exactly one applies.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from state.errors import StateError
from state.records import (
    Arrival,
    CommitResult,
    Delivery,
    DeliveryOutcome,
    NodeCompletion,
    NodeState,
    OutboxMessage,
    RetryOutcome,
    Run,
    RunStatus,
    Wakeup,
)
from state.rules import RunView, Verdict, leases, nodes, operator, runs, waits
from state.transactional.apply import Writer
from state.transactional.txn import NodeField, Txn

__all__ = ["Begin", "TransactionalStore"]

#: What a completion writes of the node record.
_COMPLETION_FIELDS: tuple[NodeField, ...] = (
    "status",
    "output",
    "action",
    "edges_taken",
    "error",
    "attempts",
    "updated_at",
)

#: What a claim writes of the node record (the lease with it: no second write).
_CLAIM_FIELDS: tuple[NodeField, ...] = (
    "status",
    "attempts",
    "deliveries",
    "updated_at",
    "claimed_by",
    "lease_until",
)

#: Opens one transaction: committed when the block ends, rolled back if it raises.
Begin = Callable[[], AbstractContextManager[Txn]]


def _view(run: Run | None) -> RunView | None:
    return None if run is None else RunView(run_id=run.run_id, status=run.status, fence=run.fence)


class TransactionalStore:
    """The deciding operations of ``StateStore`` over a backend's transactions and primitives."""

    def __init__(self, *, begin: Begin, clock: Callable[[], float], retention_s: float) -> None:
        """Run each operation in a transaction from ``begin``; stamp it with ``clock``."""
        self._begin = begin
        self._clock = clock
        self.retention_s = retention_s

    def _writer(self, t: Txn, now: float) -> Writer:
        return Writer(t, now, self.retention_s)

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
        now = self._clock()
        with self._begin() as t:
            existing = t.run(run.run_id)
            change = runs.create(
                existing, run, start_nodes=start_nodes, outbox=outbox, now=now, context=context
            )
            if existing is not None:
                return False, existing
            self._writer(t, now).run(change)
            stored = t.run(run.run_id)
            assert stored is not None
            return True, stored

    def set_run_status(self, run_id: str, *, from_: Collection[str], to: str) -> bool:
        """Move the run to ``to`` if its status is in ``from_``."""
        now = self._clock()
        with self._begin() as t:
            change = runs.transition(t.run_status(run_id), from_=from_, to=to)
            self._writer(t, now).run(change)
            return change.applied

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
        now = self._clock()
        with self._begin() as t:
            view = t.run_status(run_id)
            change = runs.finish(view, status=status, output=output, error=error, outbox=outbox)
            self._writer(t, now).run(change)
            return change.applied

    def cancel_run(
        self,
        run_id: str,
        *,
        reason: str,
        outbox: Sequence[OutboxMessage] = (),
        fence: int | None = None,
    ) -> tuple[bool, Run | None]:
        """Cancel an active run, its active nodes and waits, or leave a marker for its start."""
        now = self._clock()
        with self._begin() as t:
            before = t.run(run_id)
            change = runs.cancel(
                _view(before), run_id=run_id, reason=reason, outbox=outbox, fence=fence, now=now
            )
            self._writer(t, now).run(change)
            return change.applied, before

    def advance_fence(self, run_id: str) -> int:
        """Advance the run's fence and return it (0 when there is no such run)."""
        with self._begin() as t:
            change = runs.advance_fence(t.run_view(run_id))
            self._writer(t, self._clock()).run(change)
            return change.fence or 0

    def mark_reconciled(
        self,
        run_id: str,
        *,
        stalled_since: float,
        fence: int,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Claim one stall (progress still at ``stalled_since``) with the jobs it re-emits."""
        now = self._clock()
        with self._begin() as t:
            change = runs.claim_stall(
                t.run_view(run_id), stalled_since=stalled_since, fence=fence, outbox=outbox, now=now
            )
            self._writer(t, now).run(change)
            return change.applied

    # --- an operator's actions ------------------------------------------------------------
    def pause_run(self, run_id: str) -> bool:
        """Pause a runnable run once."""
        now = self._clock()
        with self._begin() as t:
            change = operator.pause(t.run_status(run_id))
            self._writer(t, now).run(change)
            return change.applied

    def resume_run(self, run_id: str) -> bool:
        """Resume a paused run once: running, or waiting when no node is pending or running."""
        now = self._clock()
        with self._begin() as t:
            view = t.run_status(run_id)
            change = operator.resume(view, busy=view is not None and t.busy(run_id))
            self._writer(t, now).run(change)
            return change.applied

    def restart_rejected(
        self,
        run: Run,
        *,
        start_nodes: Sequence[str],
        outbox: Sequence[OutboxMessage] = (),
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """Replace a rejected start's record with ``run`` and its start nodes, once."""
        now = self._clock()
        with self._begin() as t:
            change = operator.restart_rejected(
                t.run(run.run_id),
                run,
                start_nodes=start_nodes,
                outbox=outbox,
                now=now,
                context=context,
            )
            self._writer(t, now).run(change)
            return change.applied

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
        """Start a finished run's next attempt once, if the kept records are as expected."""
        now = self._clock()
        with self._begin() as t:
            view = t.run_view(run_id)
            if view is None:
                return RetryOutcome(applied=False)
            found = {n: rec for n in expect if (rec := t.node((run_id, n, 0))) is not None}
            moved = operator.moved(expect, found)
            change = operator.retry(
                view,
                from_nodes=from_nodes,
                reset=reset,
                skipped=skipped,
                arrivals=arrivals,
                moved_nodes=moved,
            )
            if change.applied and outbox:
                change = change._replace(outbox=tuple(outbox))
            self._writer(t, now).run(change)
            return RetryOutcome(
                applied=change.applied,
                attempt=change.attempt if change.attempt is not None else view.attempt,
                status=view.status,
                moved=tuple(moved),
            )

    def append_history(
        self, run_id: str, kind: str, *, node_id: str | None = None, data: Any = None
    ) -> None:
        """Append one history event."""
        now = self._clock()
        with self._begin() as t:
            t.append_history(run_id, kind, node_id, data, now=now)

    # --- nodes ----------------------------------------------------------------------------
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
        """Claim a pending node (or, with ``takeover``, a running one) for ``attempt``."""
        now = self._clock()
        key = (run_id, node_id, iteration)
        with self._begin() as t:
            node = t.node(key)
            if node is None and create:
                node = nodes.created(key, now=now)
                t.create_node(node)
            change = nodes.claim(
                node,
                attempt=attempt,
                takeover=takeover,
                now=now,
                claimed_by=claimed_by,
                lease_until=lease_until,
            )
            if not change.applied or change.node is None:
                return None
            t.update_node(change.node, _CLAIM_FIELDS)
            writer = self._writer(t, now)
            writer.follow(key, change.follow)
            if start_run:
                # The run's first claim: one transaction instead of a status write before it.
                writer.run(runs.start(t.run_status(run_id)))
            # The record as written: the one read, with the claim's columns (no second read).
            return change.node

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
        """Move the lease of the attempt ``claimed_by`` holds to ``until``; False if it lost it."""
        key = (run_id, node_id, iteration)
        with self._begin() as t:
            node = leases.renewed(t.node(key), attempt=attempt, claimed_by=claimed_by, until=until)
            return node is not None and t.update_node(node, ("lease_until",))

    def commit_node(self, completion: NodeCompletion) -> CommitResult:
        """Apply a node completion once, with everything it causes."""
        cp = completion
        now = self._clock()
        key = (cp.run_id, cp.node_id, cp.iteration)
        with self._begin() as t:
            node = t.node(key)
            run = t.run_status(cp.run_id)
            run_status = run.status if run is not None else RunStatus.FAILED
            change = nodes.complete(node, None if run is None else run.status, cp, now=now)
            if change.verdict is Verdict.MISSING:
                raise StateError(
                    f"run {cp.run_id!r}: node {cp.node_id!r} has no record to complete"
                )
            if not change.applied or change.node is None or node is None:
                assert node is not None
                return CommitResult(applied=False, node=node, run_status=run_status)
            t.update_node(change.node, _COMPLETION_FIELDS)
            writer = self._writer(t, now)
            writer.follow(key, change.follow, run)
            if cp.finish is not None and not t.busy(cp.run_id):
                # The run's last node: its end is written in this transaction, not a next one.
                fin = cp.finish
                end = runs.finish(
                    t.run_status(cp.run_id),
                    status=fin.status,
                    output=fin.output,
                    error=fin.error,
                    outbox=fin.outbox,
                )
                writer.run(end)
                run_status = fin.status if end.applied else run_status
            stored = t.node(key)
            assert stored is not None
            return CommitResult(applied=True, node=stored, run_status=run_status)

    def retry_node(
        self, run_id: str, node_id: str, iteration: int, *, attempt: int, error: str
    ) -> bool:
        """Put an active node back to pending after failed ``attempt``."""
        now = self._clock()
        key = (run_id, node_id, iteration)
        with self._begin() as t:
            change = nodes.retry(t.node(key), attempt=attempt, error=error, now=now)
            if not change.applied or change.node is None:
                return False
            t.update_node(change.node, ("status", "attempts", "error", "updated_at"))
            self._writer(t, now).follow(key, change.follow)
            return True

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
        now = self._clock()
        key = (run_id, node_id, iteration)
        with self._begin() as t:
            node = t.node(key)
            if node is None or not node.active:
                return False  # missing, or settled (a redelivery): the run need not be read
            run = t.run_status(run_id)
            change = nodes.fail(
                key,
                node,
                None if run is None else run.status,
                error=error,
                fallback=fallback,
                fail_run=fail_run,
                outbox=outbox,
                skipped=skipped,
                arrivals=arrivals,
                now=now,
            )
            if not change.applied or change.node is None:
                return False
            t.update_node(change.node, ("status", "error", "updated_at"))
            self._writer(t, now).follow(key, change.follow, run)
            return True

    def cancel_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0, *, reason: str
    ) -> list[str]:
        """Cancel the active ones among ``node_ids`` (conditional writes, no reads)."""
        now = self._clock()
        cancelled: list[str] = []
        with self._begin() as t:
            for node_id in node_ids:
                key = (run_id, node_id, iteration)
                change = nodes.cancel(key, reason=reason, now=now)
                assert change.node is not None
                if t.update_node(change.node, ("status", "error", "updated_at"), if_active=True):
                    cancelled.append(node_id)
                    self._writer(t, now).follow(key, change.follow)
            return cancelled

    def fire_join(self, run_id: str, join_id: str, iteration: int = 0) -> bool:
        """Create the join's pending record once."""
        now = self._clock()
        key = (run_id, join_id, iteration)
        with self._begin() as t:
            change = nodes.fire_join(key, now=now)
            assert change.node is not None
            if not t.create_node(change.node):
                return False
            self._writer(t, now).follow(key, change.follow)
            return True

    # --- batches --------------------------------------------------------------------------
    def put_batch(self, run_id: str, batch: str, pages: Mapping[int, Sequence[Any]]) -> None:
        """Store pages of a batch (upserts by page)."""
        with self._begin() as t:
            t.put_batch(run_id, batch, pages)

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
        """Park a running node on an event and/or a timer, or hand it an event already here."""
        now = self._clock()
        key = (run_id, node_id, iteration)
        with self._begin() as t:
            node = t.node(key)
            if not waits.suspendable(node):
                return None
            wait = t.wait(key)
            oldest = t.oldest_event(run_id, event) if event is not None else None
            change = waits.suspend(node, wait, oldest, event=event, due_at=due_at, now=now)
            if not change.applied or change.node is None or change.wait is None:
                return None
            w = self._writer(t, now)
            t.put_wait(key, change.wait)
            if change.consumed is not None and oldest is not None:
                t.consume_event(run_id, change.consumed, node_id, iteration)
                w.follow(key, change.follow)
                return waits.wakeup_of(change.wait, oldest.payload)
            t.update_node(change.node, ("status", "updated_at"))
            # The park's progress is written once: by the move to waiting, or by a touch.
            for e in change.follow.history:
                t.append_history(run_id, e.kind, e.node_id, e.data, now=now)
            run = t.run_status(run_id)
            settle = runs.settle_waiting(run, busy=lambda: t.busy(run_id))
            if settle.applied:
                w.run(settle)  # a status change is progress too
            else:
                w.touch(run_id, run)
            return None

    def deliver_event(
        self, run_id: str, name: str, *, event_id: str, payload: Any = None
    ) -> Delivery:
        """Dedupe, then wake the node waiting for ``name`` or keep the event in the inbox."""
        now = self._clock()
        with self._begin() as t:
            run = t.run_status(run_id)
            status = None if run is None else run.status
            seen = status is not None and t.seen(run_id, event_id)
            admission = waits.admit_event(status, seen=seen, name=name, event_id=event_id)
            if admission.outcome is not None:
                if (e := admission.history) is not None:
                    t.append_history(run_id, e.kind, e.node_id, e.data, now=now)
                return Delivery(outcome=admission.outcome)
            t.add_event(run_id, event_id, name, payload, now=now)
            found = t.waiter(run_id, name)
            if found is None:
                e = waits.stored_event(name, event_id)
                t.append_history(run_id, e.kind, e.node_id, e.data, now=now)
                return Delivery(outcome=DeliveryOutcome.STORED)
            node, wait = found
            key = (run_id, node.node_id, node.iteration)
            change = waits.match(node, wait, event_id=event_id, now=now)
            assert change.node is not None and change.wait is not None
            t.consume_event(run_id, event_id, node.node_id, node.iteration)
            t.put_wait(key, change.wait)
            t.update_node(change.node, ("status", "updated_at"))
            self._writer(t, now).follow(key, change.follow, run)
            return Delivery(
                outcome=DeliveryOutcome.MATCHED, node_id=node.node_id, iteration=node.iteration
            )

    def fire_timer(
        self,
        run_id: str,
        node_id: str,
        iteration: int = 0,
        *,
        now: float,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Wake a waiting node whose timer is due by ``now``, once."""
        key = (run_id, node_id, iteration)
        with self._begin() as t:
            found = t.parked(key)
            if found is None:
                return False
            node, wait, run_status = found
            at = self._clock()
            change = waits.fire_timer(node, wait, run_status, now=now, at=at, outbox=outbox)
            if not change.applied or change.node is None or change.wait is None:
                return False
            t.put_wait(key, change.wait)
            t.update_node(change.node, ("status", "updated_at"))
            run = RunView(run_id=run_id, status=run_status)
            self._writer(t, at).follow(key, change.follow, run)
            return True
