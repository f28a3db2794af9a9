"""Node operations of the Scylla store: claim, complete, retry, fail, cancel, fire joins."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from state.constants import (
    NODE_ACTIVE,
    NODE_PENDING,
    NODE_RUNNING,
    NODE_WAITING,
    RUN_ACTIVE,
    RUN_FAILED,
)
from state.errors import StateError
from state.models import Arrival, CommitResult, NodeCompletion, NodeState, OutboxMessage
from state.scylla_core import MAX_CAS_ROUNDS
from state.scylla_driver import _ok
from state.scylla_effects import EffectsMixin
from state.scylla_rows import _dumps, _node_from, _pending_effects, _u
from state.scylla_schema import Effects, FailRun, encode_effects

__all__ = ["NodesMixin"]


class NodesMixin(EffectsMixin):
    """The ``StateStore`` node and join operations (each node record is its own partition)."""

    # --- nodes ------------------------------------------------------------------------------
    def get_node(self, run_id: str, node_id: str, iteration: int = 0) -> NodeState | None:
        """Read one node record (applying its unapplied effects first)."""
        return self.get_nodes(run_id, [node_id], iteration).get(node_id)

    def get_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0
    ) -> dict[str, NodeState]:
        """Read the existing records among ``node_ids``, one partition each, concurrently."""
        ids = list(dict.fromkeys(node_ids))
        out: dict[str, NodeState] = {}
        for _ in range(MAX_CAS_ROUNDS):
            results = _ok(self._c().run_all([("node_get", (run_id, n, iteration)) for n in ids]))
            rows = [r[0] for r in results if r and r[0].get("status") is not None]
            # Whoever sees a write whose effects are not applied applies them, then reads
            # again: no reader may act on a completion whose successors are not written yet.
            pending = [r for r in rows if _pending_effects(r) is not None]
            if not pending:
                out = {r["node_id"]: _node_from(r) for r in rows}
                break
            for row in pending:
                self._repair_node(row)
        else:
            raise StateError(f"run {run_id!r}: node effects kept changing while being read")
        return out

    def begin_attempt(
        self, run_id: str, node_id: str, iteration: int, attempt: int, *, takeover: bool = False
    ) -> NodeState | None:
        """Claim a pending node (or, with ``takeover``, a running one): compare-and-set.

        The condition is the status, attempts and deliveries just read, so of two
        concurrent duplicates only one claims a pending node; the other re-reads
        at SERIAL, finds it running and gets None.
        """
        key = (run_id, node_id, iteration)
        run, row = self._run_and_node(*key)
        for _ in range(MAX_CAS_ROUNDS):
            claimable = (NODE_PENDING, NODE_RUNNING) if takeover else (NODE_PENDING,)
            if row is None or row["status"] not in claimable:
                if row is not None:
                    self._repair_node(row, run, reread_run=False)
                return None
            self._repair_node(row, run, reread_run=False)
            stored = row.get("attempts") or 0
            att = max(attempt, stored, 1)
            deliveries = (row.get("deliveries") or 0) + 1 if att == stored else 1
            at, ts = self._now()
            op = uuid.uuid4().hex
            eff = Effects(
                at=at,
                ts=ts,
                iteration=iteration,
                history=(
                    self._event("node.started", node_id, {"attempt": att, "delivery": deliveries}),
                ),
                touch=True,
            )
            params = (
                self._ttl_for(run),
                att,
                deliveries,
                at,
                op,
                encode_effects(eff),
                *key,
                row["status"],
                row.get("attempts"),
                row.get("deliveries"),
            )
            applied, _ = self._c().lwt(
                "node_begin", params, op, lambda: self._node_row(*key, serial=True)
            )
            if applied:
                self._apply_node_effects(key, eff, op, run)
                return replace(
                    _node_from(row),
                    status=NODE_RUNNING,
                    attempts=att,
                    deliveries=deliveries,
                    updated_at=at,
                )
            row = self._node_row(*key, serial=True)
        raise StateError(f"run {run_id!r}: node {node_id!r} start lost {MAX_CAS_ROUNDS} races")

    def commit_node(self, completion: NodeCompletion) -> CommitResult:
        """Apply a node completion once; a duplicate re-applies the stored effects (the repair)."""
        cp = completion
        key = (cp.run_id, cp.node_id, cp.iteration)
        run, row = self._run_and_node(*key)
        run_status = run["status"] if run is not None else RUN_FAILED
        live = run_status in RUN_ACTIVE
        for _ in range(MAX_CAS_ROUNDS):
            if row is not None and row["status"] not in NODE_ACTIVE:
                self._repair_node(row, run, reread_run=False)
                return CommitResult(applied=False, node=_node_from(row), run_status=run_status)
            at, ts = self._now()
            op = uuid.uuid4().hex
            eff = Effects(
                at=at,
                ts=ts,
                iteration=cp.iteration,
                history=(self._event(f"node.{cp.status}", cp.node_id, {"action": cp.action}),),
            )
            if live:
                # Only a live run gets successors: a late node must not restart a finished run.
                eff = replace(
                    eff,
                    touch=True,
                    pending=tuple(cp.pending),
                    skipped=tuple(cp.skipped),
                    arrivals=tuple((a.join_id, a.predecessor, a.outcome) for a in cp.arrivals),
                    context=dict(cp.context_writes),
                    outbox=self._stamp(cp.outbox, at),
                )
            stored = row.get("attempts") if row is not None else None
            grow = stored is None or stored <= cp.attempt
            common = (
                self._ttl_for(run),
                cp.status,
                _dumps(cp.output),
                _u(cp.action),
                list(cp.edges_taken),
            )
            if grow:
                name = "node_complete_up"
                params: tuple[Any, ...] = (
                    *common,
                    cp.attempt,
                    at,
                    op,
                    encode_effects(eff),
                    *key,
                    cp.attempt,
                )
            else:
                name = "node_complete_keep"
                params = (*common, at, op, encode_effects(eff), *key, cp.attempt)
            applied, _ = self._c().lwt(name, params, op, lambda: self._node_row(*key, serial=True))
            if applied:
                self._apply_node_effects(key, eff, op, run)
                node = NodeState(
                    run_id=cp.run_id,
                    node_id=cp.node_id,
                    iteration=cp.iteration,
                    status=cp.status,
                    attempts=max(stored or 0, cp.attempt),
                    deliveries=(row.get("deliveries") or 0) if row is not None else 0,
                    output=cp.output,
                    action=cp.action,
                    edges_taken=tuple(cp.edges_taken),
                    error=None,
                    updated_at=at,
                )
                return CommitResult(applied=True, node=node, run_status=run_status)
            row = self._node_row(*key, serial=True)
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
        run, row = self._run_and_node(*key)
        for _ in range(MAX_CAS_ROUNDS):
            if row is None or row["status"] not in NODE_ACTIVE:
                if row is not None:
                    self._repair_node(row, run, reread_run=False)
                return False
            at, ts = self._now()
            op = uuid.uuid4().hex
            eff = Effects(
                at=at,
                ts=ts,
                iteration=iteration,
                history=(self._event("node.retry", node_id, {"attempt": attempt, "error": error}),),
                touch=True,
                # A parked node retried: a waiting run has a pending node again.
                wake_run=row["status"] == NODE_WAITING,
            )
            enc = encode_effects(eff)
            ttl = self._ttl_for(run)
            params: tuple[Any, ...]
            if (row.get("attempts") or 0) <= attempt:
                name, params = "node_retry_up", (ttl, attempt, error, at, op, enc, *key, attempt)
            else:
                name, params = "node_retry_keep", (ttl, error, at, op, enc, *key, attempt)
            applied, _ = self._c().lwt(name, params, op, lambda: self._node_row(*key, serial=True))
            if applied:
                self._apply_node_effects(key, eff, op, run)
                return True
            row = self._node_row(*key, serial=True)
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
        run, row = self._run_and_node(*key)
        if row is not None and row["status"] not in NODE_ACTIVE:
            # Already settled: a redelivery. Finish what the first failure started (the repair).
            self._repair_node(row)
            return False
        at, ts = self._now()
        op = uuid.uuid4().hex
        eff = Effects(
            at=at,
            ts=ts,
            iteration=iteration,
            history=(self._event("node.failed", node_id, {"error": error, "fallback": fallback}),),
            fallback=fallback,
            fail_run=FailRun(error=error, outbox=self._stamp(outbox, at))
            if fail_run and fallback is None
            else None,
        )
        if fallback is None and not fail_run:
            # A failure a join tolerates: its skips and arrivals, as a completion would write.
            eff = replace(
                eff,
                touch=True,
                skipped=tuple(skipped),
                arrivals=tuple((a.join_id, a.predecessor, a.outcome) for a in arrivals),
            )
        params = (self._ttl_for(run), error, at, op, encode_effects(eff), *key)
        for _ in range(MAX_CAS_ROUNDS):
            applied, _ = self._c().lwt(
                "node_fail", params, op, lambda: self._node_row(*key, serial=True)
            )
            if applied:
                self._apply_node_effects(key, eff, op, run)
                return True
            row = self._node_row(*key, serial=True)
            if row is None or row["status"] not in NODE_ACTIVE:
                if row is not None:
                    self._repair_node(row)
                return False
            # Still active: the conditional write timed out without being applied.
        raise StateError(
            f"run {run_id!r}: node {node_id!r} failure timed out {MAX_CAS_ROUNDS} times"
        )

    def cancel_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0, *, reason: str
    ) -> list[str]:
        """Cancel the active ones among ``node_ids`` (each conditionally); returns them."""
        run = self._run_row(run_id)
        ttl = self._ttl_for(run)
        cancelled: list[str] = []
        for node_id in dict.fromkeys(node_ids):
            key = (run_id, node_id, iteration)
            for _ in range(MAX_CAS_ROUNDS):
                at, ts = self._now()
                op = uuid.uuid4().hex
                eff = Effects(
                    at=at,
                    ts=ts,
                    iteration=iteration,
                    history=(self._event("node.cancelled", node_id, {"reason": reason}),),
                )
                params = (ttl, reason, at, op, encode_effects(eff), *key)
                reread = functools.partial(self._node_row, *key, serial=True)
                applied, _ = self._c().lwt("node_cancel", params, op, reread)
                if applied:
                    self._apply_node_effects(key, eff, op, run)
                    cancelled.append(node_id)
                    break
                row = reread()
                if row is None or row["status"] not in NODE_ACTIVE:
                    break
                # Still active: a timed-out write that did not happen; try again.
            else:
                raise StateError(f"run {run_id!r}: cancelling {node_id!r} timed out")
        return cancelled

    def fire_join(self, run_id: str, join_id: str, iteration: int = 0) -> bool:
        """Create the join's pending record once (``INSERT ... IF NOT EXISTS``)."""
        run = self._run_row(run_id)
        at, ts = self._now()
        op = uuid.uuid4().hex
        eff = Effects(
            at=at,
            ts=ts,
            iteration=iteration,
            history=(self._event("join.fired", join_id, None),),
            touch=True,
            # Fired while the run waits (a late chord body): the run is running again, and a
            # suspend deciding "nothing runs" concurrently must see the run token change.
            wake_run=True,
        )
        ttl = self._ttl_for(run)
        c = self._c()
        c.execute("dir_put", (run_id, iteration, join_id, at, ttl, ts))
        for _ in range(MAX_CAS_ROUNDS):
            applied, row = self._c().lwt(
                "node_create",
                (run_id, join_id, iteration, NODE_PENDING, at, op, encode_effects(eff), ttl),
                op,
                lambda: self._node_row(run_id, join_id, iteration, serial=True),
            )
            if applied:
                self._apply_node_effects((run_id, join_id, iteration), eff, op, run)
                return True
            if row is None or row.get("status") is None or "effects" not in row:
                row = self._node_row(run_id, join_id, iteration, serial=True)
            if row is not None:
                # Another caller fired it (or the join was skipped): finish its effects.
                self._repair_node(row, run, reread_run=False)
                return False
            # A timed-out write that did not happen: nobody fired yet, try again.
        raise StateError(
            f"run {run_id!r}: firing join {join_id!r} timed out {MAX_CAS_ROUNDS} times"
        )

    def get_arrivals(self, run_id: str, join_id: str, iteration: int = 0) -> dict[str, str]:
        """Read a join's arrival set (one partition)."""
        rows = self._c().execute("arrival_get", (run_id, join_id, iteration))
        return {r["predecessor"]: r["outcome"] for r in rows}
