"""Writing a change set inside one transaction: the primary row's follow-ups and run changes."""

from __future__ import annotations

from state.records import NodeStatus, RunStatus
from state.rules import FollowUps, RunChange, RunView, runs
from state.transactional.txn import Key, Txn

__all__ = ["Writer"]


class Writer:
    """Writes change sets through one transaction's primitives."""

    __slots__ = ("now", "retention_s", "txn")

    def __init__(self, txn: Txn, now: float, retention_s: float) -> None:
        """Write through ``txn``, stamped ``now``; finished runs expire after ``retention_s``."""
        self.txn = txn
        self.now = now
        self.retention_s = retention_s

    def follow(self, key: Key, follow: FollowUps, run: RunView | None = None) -> None:
        """Write a node change's follow-ups; ``run``: the run as this transaction read it."""
        t, now = self.txn, self.now
        run_id, _, iteration = key
        if follow.end_wait:
            t.end_wait(key)
        for e in follow.history:
            t.append_history(run_id, e.kind, e.node_id, e.data, now=now)
        if follow.pending:
            t.insert_nodes(run_id, follow.pending, iteration, NodeStatus.PENDING, now=now)
        for node_id, at in follow.pending_at:
            t.insert_nodes(run_id, (node_id,), at, NodeStatus.PENDING, now=now)
        if follow.skipped:
            t.insert_nodes(run_id, follow.skipped, iteration, NodeStatus.SKIPPED, now=now)
        if follow.arrivals:
            t.arrive(run_id, iteration, follow.arrivals)
        if follow.context:
            t.set_context(run_id, follow.context, now=now)
        if follow.context_deletes:
            t.delete_context(run_id, follow.context_deletes)
        if follow.outbox:
            t.add_outbox(follow.outbox, now=now)
        if follow.fail_run is not None:
            f = follow.fail_run
            self.run(runs.fail_run(self._read(run_id, run), error=f.error, outbox=f.outbox))
            return
        if follow.wake_run:
            run = self._read(run_id, run)
            woke = runs.wake_run(run)
            if woke.status is not None:
                self.run(woke)  # moving the run is progress too
                return
        if follow.touch:
            self.touch(run_id, run)

    def touch(self, run_id: str, run: RunView | None = None) -> None:
        """Record progress on a live run (moves its status-index entry)."""
        view = self._read(run_id, run)
        if view is not None and runs.live(view.status):
            self.txn.update_run(run_id, view.status, now=self.now)

    def run(self, change: RunChange) -> None:
        """Write a run change: the row (or a new run), its index, ended waits, follow-ups."""
        if not change.applied:
            return
        t, now = self.txn, self.now
        run_id = change.run_id
        expires_at = now + self.retention_s if change.terminal else None
        if change.record is not None:
            if change.replace:
                t.delete_run(run_id)
            t.insert_run(change.record, now=now, expires_at=expires_at)
            if change.start_nodes:
                t.insert_nodes(run_id, change.start_nodes, 0, NodeStatus.PENDING, now=now)
            if change.context:
                t.set_context(run_id, change.context, now=now)
        else:
            if change.fence is not None:
                t.set_fence(run_id, change.fence)
            if change.reset_nodes:
                t.reset_nodes(run_id, change.reset_nodes, 0)
            if change.pending_nodes:
                t.insert_nodes(run_id, change.pending_nodes, 0, NodeStatus.PENDING, now=now)
            if change.skipped_nodes:
                t.insert_nodes(run_id, change.skipped_nodes, 0, NodeStatus.SKIPPED, now=now)
            if change.arrivals:
                t.arrive(run_id, 0, change.arrivals)
            if change.attempt is not None:
                t.set_attempt(run_id, change.attempt)
            if change.revive:
                t.revive(run_id)
            status = change.status if change.status is not None else change.previous
            if status is not None and (change.status is not None or change.progress):
                t.update_run(
                    run_id,
                    status,
                    now=now,
                    output=change.output,
                    error=change.error,
                    expires_at=expires_at,
                    reconciled_at=change.reconciled_at,
                )
            if change.terminal:
                t.end_waits(run_id, cancelled=change.status == RunStatus.CANCELLED)
            if change.cancel_nodes is not None:
                t.cancel_active_nodes(run_id, reason=change.cancel_nodes, now=now)
        for e in change.history:
            t.append_history(run_id, e.kind, e.node_id, e.data, now=now)
        if change.outbox:
            t.add_outbox(change.outbox, now=now)

    def _read(self, run_id: str, run: RunView | None) -> RunView | None:
        return run if run is not None else self.txn.run_status(run_id)
