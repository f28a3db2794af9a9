"""Node operations of the Scylla store: claim, complete, retry, fail, cancel, fire joins.

Each node record is a partition of its own, so the completions of a fan-out
never contend. Every transition is one LWT on it: ``begin_attempt`` a
compare-and-set on the status, attempts and deliveries read; the others
``IF status IN`` the active statuses (``commit_node`` and ``retry_node`` also
compare ``attempts`` to keep the higher one); ``fire_join`` ``IF NOT EXISTS``.
The rule decides on the rows read; the condition makes the decision hold.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from typing import Any

from state.codec import dumps
from state.errors import StateError
from state.records import (
    Arrival,
    CommitResult,
    NodeCompletion,
    NodeState,
    NodeStatus,
    OutboxMessage,
    RunStatus,
)
from state.rules import Verdict, leases, nodes
from state.scylla.apply import Applier
from state.scylla.driver import Row, _ok
from state.scylla.effects import encode_effects
from state.scylla.rows import clear, node_of, pending_effects, unset
from state.scylla.session import MAX_CAS_ROUNDS, Session, _row
from state.scylla.writes import Writes

__all__ = ["Nodes"]


class Nodes:
    """The node and join operations."""

    def __init__(self, session: Session, writes: Writes, applier: Applier) -> None:
        """Work through ``session``; stage with ``writes``; apply with ``applier``."""
        self.s = session
        self.w = writes
        self.fx = applier

    def get_node(self, run_id: str, node_id: str, iteration: int = 0) -> NodeState | None:
        """Read one node record (applying its unapplied effects first)."""
        return self.get_nodes(run_id, [node_id], iteration).get(node_id)

    def node_from(
        self, run_id: str, node_id: str, iteration: int, row: Row | None
    ) -> NodeState | None:
        """``get_node`` of a node row just read (read again if it had effects to apply)."""
        if row is not None and pending_effects(row) is not None:
            return self.get_node(run_id, node_id, iteration)
        if row is not None:
            self.s.remember(("node", run_id, node_id, iteration), row)
        return node_of(row)

    def get_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0
    ) -> dict[str, NodeState]:
        """Read the existing records among ``node_ids``, one partition each, concurrently."""
        ids = list(dict.fromkeys(node_ids))
        for _ in range(MAX_CAS_ROUNDS):
            results = _ok(
                self.s.conn().run_all([("node_get", (run_id, n, iteration)) for n in ids])
            )
            rows = [r[0] for r in results if r and r[0].get("status") is not None]
            # Whoever sees a write whose effects are not applied applies them, then reads
            # again: no reader may act on a completion whose successors are not written yet.
            pending = [r for r in rows if pending_effects(r) is not None]
            if not pending:
                if len(ids) == 1 and rows:
                    # A task's own node, which it may claim next (``begin_attempt``).
                    self.s.remember(("node", run_id, ids[0], iteration), rows[0])
                return {r["node_id"]: n for r in rows if (n := node_of(r)) is not None}
            for row in pending:
                self.fx.repair_node(row)
        raise StateError(f"run {run_id!r}: node effects kept changing while being read")

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
    ) -> NodeState | None:
        """Claim a pending node (or, with ``takeover``, a running one): compare-and-set.

        The condition is the status, attempts and deliveries just read, so of two
        concurrent duplicates only one claims a pending node; the other re-reads
        at SERIAL, finds it running and gets None. With ``create`` a missing record
        is first created ``pending`` (``IF NOT EXISTS``, listed in the run's directory).
        """
        key = (run_id, node_id, iteration)
        # What this task's ``get_run`` and ``get_node`` read a moment ago; else read them now.
        run, row = self.s.recall(("run", run_id)), self.s.recall(("node", *key))
        if run is None or row is None:
            run, row = self.s.run_and_node(*key)
        if row is None and create and run is not None:
            at, ts = self.s.now()
            ttl = self.s.ttl_for(run)
            _ok(self.s.conn().run_all(self.w.directory(run_id, iteration, [node_id], at, ttl, ts)))
            self.fx.create_nodes(run_id, iteration, [node_id], NodeStatus.PENDING, at, ttl)
            row = self.s.node_row(*key, serial=True)
        for _ in range(MAX_CAS_ROUNDS):
            at, ts = self.s.now()
            change = nodes.claim(
                node_of(row),
                attempt=attempt,
                takeover=takeover,
                now=at,
                claimed_by=claimed_by,
                lease_until=lease_until,
            )
            if row is not None:
                self.fx.repair_node(row, run, reread_run=False)
            if row is None or not change.applied or change.node is None:
                return None
            claimed = change.node
            op = uuid.uuid4().hex
            eff = self.w.node_effects(change.follow, at=at, ts=ts, iteration=iteration)
            params = (
                self.s.ttl_for(run),
                claimed.attempts,
                claimed.deliveries,
                at,
                op,
                encode_effects(eff),
                # A lease-less claim of a lease-less row writes no tombstones.
                clear(claimed_by, row.get("claimed_by")),
                clear(lease_until, row.get("lease_until")),
                *key,
                row["status"],
                row.get("attempts"),
                row.get("deliveries"),
            )
            reread = functools.partial(self.s.node_row, *key, serial=True)
            applied, _ = self.s.conn().lwt("node_begin", params, op, reread)
            if applied:
                # Left unmarked: the completion replaces these effects (and marks its own).
                self.fx.apply_node(key, eff, op, run, mark=False)
                written = {
                    **row,
                    "status": claimed.status,
                    "attempts": claimed.attempts,
                    "deliveries": claimed.deliveries,
                    "updated_at": at,
                    "lwt_op": op,
                    "effects": params[5],
                    "claimed_by": claimed_by,
                    "lease_until": lease_until,
                }
                # The completion of this attempt expects exactly this row: it need not read it.
                self.s.remember(("claimed", *key), (written, run))
                return claimed
            row = reread()
        raise StateError(f"run {run_id!r}: node {node_id!r} start lost {MAX_CAS_ROUNDS} races")

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
        """One LWT: ``IF status = 'running' AND attempts AND claimed_by`` are the holder's.

        The rule (``leases.renewed``) is the condition itself, so no read comes
        first; a lease never moves earlier only because renewals of one holder
        are sequential. A timeout is answered by reading the row at SERIAL.
        """
        key = (run_id, node_id, iteration)

        def reread() -> Row | None:
            row = self.s.node_row(*key, serial=True)
            held = leases.renewed(node_of(row), attempt=attempt, claimed_by=claimed_by, until=until)
            # Renewed, as far as the holder can tell: still its, with the lease this one wrote.
            if held is None or row is None or row.get("lease_until") != until:
                return None
            return {**row, "lwt_op": "renewed"}

        applied, _ = self.s.conn().lwt(
            "node_renew_lease", (until, *key, attempt, claimed_by), "renewed", reread
        )
        return applied

    def commit_node(self, completion: NodeCompletion) -> CommitResult:
        """Apply a node completion once; a duplicate re-applies the stored effects (the repair)."""
        cp = completion
        key = (cp.run_id, cp.node_id, cp.iteration)
        c = self.s.conn()
        # The row this attempt's claim wrote, and the run as the claim saw it: the run is read
        # again beside the conditional write (its TTL is the claim's run's, fixed below).
        claimed = self.s.recall(("claimed", *key), max_age_s=float("inf"))
        if claimed is not None:
            row, run = claimed
        else:
            run, row = self.s.run_and_node(*key)
        fresh = claimed is None
        run_status = run["status"] if run is not None else RunStatus.FAILED
        for _ in range(MAX_CAS_ROUNDS):
            at, ts = self.s.now()
            # Staged as for a live run even when the run read is finished: ``apply_node``
            # checks the run again when it applies them (this read is not at SERIAL), and a
            # retry that made the run live meanwhile applies them again (``Runs.retry_run``).
            change = nodes.complete(node_of(row), None if run is None else "running", cp, now=at)
            if row is not None and change.verdict is Verdict.REFUSED:
                self.fx.repair_node(row, run, reread_run=not fresh)
                stored_node = node_of(row)
                assert stored_node is not None
                return CommitResult(applied=False, node=stored_node, run_status=run_status)
            # Applied, or no record read: the condition decides (this read is not at SERIAL).
            done = change.node
            assert done is not None
            op = uuid.uuid4().hex
            eff = self.w.node_effects(change.follow, at=at, ts=ts, iteration=cp.iteration)
            stored = row.get("attempts") if row is not None else None
            common = (
                self.s.ttl_for(run),
                done.status,
                dumps(done.output),
                unset(done.action),
                list(done.edges_taken),
            )
            params: tuple[Any, ...]
            # ``attempts`` becomes max(attempts, attempt): one statement each way.
            if stored is None or stored <= cp.attempt:
                name = "node_complete_up"
                params = (*common, cp.attempt, at, op, encode_effects(eff), *key, cp.attempt)
            else:
                name = "node_complete_keep"
                params = (*common, at, op, encode_effects(eff), *key, cp.attempt)
            reread = functools.partial(self.s.node_row, *key, serial=True)
            if fresh:
                applied, _ = c.lwt(name, params, op, reread)
            else:
                lwt, runs_ = c.run_all([(name, params), ("run_get", (cp.run_id,))])
                applied, _ = c.settle(lwt, op, reread)
                ttl = params[0]
                run = _row(_ok([runs_])[0])
                run_status = run["status"] if run is not None else RunStatus.FAILED
                fresh = True
                if applied and self.s.ttl_for(run) != ttl:
                    # The run finished while the node ran: the row gets the run's TTL too.
                    self.fx.retention.expire_node(
                        {"run_id": key[0], "node_id": key[1], "iteration": key[2]}
                    )
            if applied:
                self.fx.apply_node(key, eff, op, run)
                return CommitResult(applied=True, node=done, run_status=run_status)
            row = reread()
            if row is None:
                raise StateError(
                    f"run {cp.run_id!r}: node {cp.node_id!r} has no record to complete"
                )
        raise StateError(
            f"run {cp.run_id!r}: node {cp.node_id!r} commit lost {MAX_CAS_ROUNDS} races"
        )

    def retry_node(
        self, run_id: str, node_id: str, iteration: int, *, attempt: int, error: str
    ) -> bool:
        """Put an active node back to pending after failed ``attempt``."""
        key = (run_id, node_id, iteration)
        run, row = self.s.run_and_node(*key)
        for _ in range(MAX_CAS_ROUNDS):
            at, ts = self.s.now()
            change = nodes.retry(node_of(row), attempt=attempt, error=error, now=at)
            if row is None or not change.applied:
                if row is not None:
                    self.fx.repair_node(row, run, reread_run=False)
                return False
            op = uuid.uuid4().hex
            eff = self.w.node_effects(change.follow, at=at, ts=ts, iteration=iteration)
            enc = encode_effects(eff)
            ttl = self.s.ttl_for(run)
            params: tuple[Any, ...]
            if (row.get("attempts") or 0) <= attempt:
                name, params = "node_retry_up", (ttl, attempt, error, at, op, enc, *key, attempt)
            else:
                name, params = "node_retry_keep", (ttl, error, at, op, enc, *key, attempt)
            reread = functools.partial(self.s.node_row, *key, serial=True)
            applied, _ = self.s.conn().lwt(name, params, op, reread)
            if applied:
                self.fx.apply_node(key, eff, op, run)
                return True
            row = reread()
        raise StateError(f"run {run_id!r}: node {node_id!r} retry lost {MAX_CAS_ROUNDS} races")

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
        key = (run_id, node_id, iteration)
        run, row = self.s.run_and_node(*key)
        at, ts = self.s.now()
        change = nodes.fail(
            key,
            node_of(row),
            None if run is None else run["status"],
            error=error,
            fallback=fallback,
            fail_run=fail_run,
            outbox=outbox,
            skipped=skipped,
            arrivals=arrivals,
            now=at,
        )
        if row is not None and change.verdict is Verdict.REFUSED:
            # Already settled: a redelivery. Finish what the first failure started (the repair).
            self.fx.repair_node(row)
            return False
        op = uuid.uuid4().hex
        eff = self.w.node_effects(change.follow, at=at, ts=ts, iteration=iteration)
        params = (self.s.ttl_for(run), error, at, op, encode_effects(eff), *key)
        reread = functools.partial(self.s.node_row, *key, serial=True)
        for _ in range(MAX_CAS_ROUNDS):
            applied, _ = self.s.conn().lwt("node_fail", params, op, reread)
            if applied:
                self.fx.apply_node(key, eff, op, run)
                return True
            row = reread()
            if row is None or not change.condition.holds(row["status"]):
                if row is not None:
                    self.fx.repair_node(row)
                return False
            # Still active: the conditional write timed out without being applied.
        raise StateError(
            f"run {run_id!r}: node {node_id!r} failure timed out {MAX_CAS_ROUNDS} times"
        )

    def cancel_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0, *, reason: str
    ) -> list[str]:
        """Cancel the active ones among ``node_ids`` (each conditionally); returns them."""
        run = self.s.run_row(run_id)
        ttl = self.s.ttl_for(run)
        cancelled: list[str] = []
        for node_id in dict.fromkeys(node_ids):
            key = (run_id, node_id, iteration)
            reread = functools.partial(self.s.node_row, *key, serial=True)
            for _ in range(MAX_CAS_ROUNDS):
                at, ts = self.s.now()
                change = nodes.cancel(key, reason=reason, now=at)
                op = uuid.uuid4().hex
                eff = self.w.node_effects(change.follow, at=at, ts=ts, iteration=iteration)
                params = (ttl, reason, at, op, encode_effects(eff), *key)
                applied, _ = self.s.conn().lwt("node_cancel", params, op, reread)
                if applied:
                    self.fx.apply_node(key, eff, op, run)
                    cancelled.append(node_id)
                    break
                row = reread()
                if row is None or not change.condition.holds(row["status"]):
                    break
                # Still active: a timed-out write that did not happen; try again.
            else:
                raise StateError(f"run {run_id!r}: cancelling {node_id!r} timed out")
        return cancelled

    def fire_join(self, run_id: str, join_id: str, iteration: int = 0) -> bool:
        """Create the join's pending record once (``IF status = null``: only if it has none)."""
        key = (run_id, join_id, iteration)
        # The chord body read the run a moment ago (only the TTL and liveness depend on it).
        run = self.s.recall(("run", run_id)) or self.s.run_row(run_id)
        at, ts = self.s.now()
        change = nodes.fire_join(key, now=at)
        assert change.node is not None
        op = uuid.uuid4().hex
        # Fired while the run waits (a late chord body): the run is running again, and a
        # suspend deciding "nothing runs" concurrently must see the run token change.
        eff = self.w.node_effects(change.follow, at=at, ts=ts, iteration=iteration)
        ttl = self.s.ttl_for(run)
        c = self.s.conn()
        c.execute("dir_put", (run_id, iteration, join_id, at, ttl, ts))
        params = (ttl, change.node.status, at, op, encode_effects(eff), run_id, join_id, iteration)
        reread = functools.partial(self.s.node_row, *key, serial=True)
        for _ in range(MAX_CAS_ROUNDS):
            applied, row = c.lwt("node_create", params, op, reread)
            if applied:
                self.fx.apply_node(key, eff, op, run)
                return True
            if row is None or row.get("status") is None or "effects" not in row:
                row = reread()
            if row is not None:
                # Another caller fired it (or the join was skipped): finish its effects.
                self.fx.repair_node(row, run, reread_run=False)
                return False
            # A timed-out write that did not happen: nobody fired yet, try again.
        raise StateError(
            f"run {run_id!r}: firing join {join_id!r} timed out {MAX_CAS_ROUNDS} times"
        )

    def get_arrivals(self, run_id: str, join_id: str, iteration: int = 0) -> dict[str, str]:
        """Read a join's arrival set (one partition)."""
        rows = self.s.conn().execute("arrival_get", (run_id, join_id, iteration))
        return {r["predecessor"]: r["outcome"] for r in rows}
