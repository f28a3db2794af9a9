"""The event inbox on Scylla: delivering events, and suspending nodes that wait for them.

``inbox`` holds one row per (run, event id), all of its columns written by LWT:

- ``INSERT ... IF NOT EXISTS`` is the dedupe: exactly one delivery of an event
  id inserts it; any other finds it (``duplicate``).
- Consuming an event is a claim, ``IF consumed_by = null AND lwt_op = <read>``:
  exactly one node gets it. A delivery claims it for the oldest waiting node
  (``consumed_how = 'wake'``) and then wakes that node (the node's own LWT,
  which records the event id on the node row); a suspend claims it for itself
  (``'suspend'``) and records it on its node row while it keeps running. If the
  node was woken otherwise in between (its timer), the claim is given back
  (``IF lwt_op = <the claim's token>``) and the event is delivered again.

A suspend and a delivery racing each other both write first and look second
(the delivery inserts, then looks for waiters; the suspend parks, then looks
for unconsumed events), so at least one sees the other: an event never sits
in the inbox beside a node parked waiting for it. A suspend that finds one
after parking un-parks itself (only if nothing touched it since), pauses a
jittered moment (the delivery may be claiming the event for it: without the
pause the two can repeat each other's steps in lockstep), and takes it.

A delivery cut short (a crash between its claim and its wake) is finished by
the redelivery of the same event: ``deliver_event`` on a known event id first
completes what the inbox row and the node row say is unfinished, then reports
``duplicate`` (or ``matched`` if it was this call that woke the node).
"""

from __future__ import annotations

import uuid
from typing import Any

from state.codec import dumps, loads
from state.errors import StateError
from state.records import NODE_ACTIVE, Delivery, DeliveryOutcome, NodeStatus, Wakeup
from state.rules import Event, runs, waits
from state.rules.waits import InboxEvent
from state.scylla.apply import Applier, backoff
from state.scylla.driver import Row, _ok
from state.scylla.rows import node_of, pending_effects, wait_of
from state.scylla.session import MAX_CAS_ROUNDS, Key, Session
from state.scylla.waits import Waits, hint_of
from state.scylla.writes import Writes

__all__ = ["Inbox"]


class Inbox:
    """``deliver_event`` and ``suspend_node``."""

    def __init__(self, session: Session, writes: Writes, applier: Applier, waits_: Waits) -> None:
        """Work through ``session``; park and wake through ``waits_``."""
        self.s = session
        self.w = writes
        self.fx = applier
        self.waits = waits_

    # --- inbox rows -----------------------------------------------------------------------
    def _inbox_row(self, run_id: str, event_id: str, *, serial: bool = False) -> Row | None:
        rows = self.s.conn().execute("inbox_get", (run_id, event_id), serial=serial)
        return rows[0] if rows and rows[0].get("name") is not None else None

    def _inbox(self, run_id: str) -> list[Row]:
        """The run's events, oldest first."""
        rows = [
            r for r in self.s.conn().execute("inbox_all", (run_id,)) if r.get("name") is not None
        ]
        return sorted(rows, key=lambda r: (r.get("received_at") or 0.0, r["event_id"]))

    def _claim(self, run: Row, ev: Row, node_id: str, iteration: int, how: str) -> str | None:
        """Claim ``ev`` for a node; the claim's token if this caller won it.

        None if the event changed since ``ev`` was read (taken, or given back and taken).
        A write that timed out without applying is tried again: nothing changed.
        """
        run_id, event_id = run["run_id"], ev["event_id"]
        for _ in range(MAX_CAS_ROUNDS):
            token = uuid.uuid4().hex
            params = (self.s.ttl_for(run), node_id, iteration, how, token, run_id, event_id)
            applied, _ = self.s.conn().lwt(
                "inbox_claim",
                (*params, ev["lwt_op"]),
                token,
                lambda: self._inbox_row(run_id, event_id, serial=True),
            )
            if applied:
                return token
            now = self._inbox_row(run_id, event_id, serial=True)
            if now is None or now.get("lwt_op") != ev["lwt_op"]:
                return None
        raise StateError(f"run {run_id!r}: claiming event {event_id!r} timed out")

    def _release(self, run: Row, event_id: str, token: str) -> bool:
        """Give back a claim (only its holder's token can): the event is unconsumed again.

        False if the claim is no longer ``token``'s (someone else gave it back first).
        A write that timed out without applying is tried again: the claim stands.
        """
        run_id = run["run_id"]
        for _ in range(MAX_CAS_ROUNDS):
            new = uuid.uuid4().hex
            applied, _ = self.s.conn().lwt(
                "inbox_release",
                (self.s.ttl_for(run), new, run_id, event_id, token),
                new,
                lambda: self._inbox_row(run_id, event_id, serial=True),
            )
            if applied:
                return True
            now = self._inbox_row(run_id, event_id, serial=True)
            if now is None or now.get("lwt_op") != token:
                return False
        raise StateError(f"run {run_id!r}: giving back event {event_id!r} timed out")

    def _note(self, run: Row, event: Event) -> None:
        at, ts = self.s.now()
        item = self.s.item(event)
        writes = self.w.history(run["run_id"], [item], at, self.s.ttl_for(run), ts)
        _ok(self.s.conn().run_all(writes))

    # --- delivering -------------------------------------------------------------------------
    def deliver_event(
        self, run_id: str, name: str, *, event_id: str, payload: Any = None
    ) -> Delivery:
        """Dedupe on ``event_id`` (``IF NOT EXISTS``), then wake the oldest waiter or keep it."""
        run = self.s.run_row(run_id)
        if run is None:
            admitted = waits.admit_event(None, seen=False, name=name, event_id=event_id)
            return Delivery(outcome=admitted.outcome or DeliveryOutcome.NO_RUN)
        for _ in range(MAX_CAS_ROUNDS):
            ev = self._inbox_row(run_id, event_id)
            if ev is not None:
                return self._redelivered(run, ev)
            admitted = waits.admit_event(run["status"], seen=False, name=name, event_id=event_id)
            if admitted.outcome is not None:  # the run has finished
                if admitted.history is not None:
                    self._note(run, admitted.history)
                return Delivery(outcome=admitted.outcome)
            at, _ = self.s.now()
            op = uuid.uuid4().hex
            params = (run_id, event_id, name, dumps(payload), at, op, op, self.s.ttl_for(run))

            def inserted() -> Row | None:
                # ``lwt_op`` may already be a claim's; ``recv_op`` stays the insert's.
                row = self._inbox_row(run_id, event_id, serial=True)
                return None if row is None else {"lwt_op": row.get("recv_op")}

            applied, _ = self.s.conn().lwt("inbox_put", params, op, inserted)
            if applied:
                delivery = self._match(run, event_id, name)
                if delivery.outcome == DeliveryOutcome.STORED:
                    self._note(run, waits.stored_event(name, event_id))
                return delivery
            # Inserted by a concurrent delivery of it: the row exists now; decide on it.
        raise StateError(f"run {run_id!r}: delivering event {event_id!r} timed out")

    def _match(self, run: Row, event_id: str, name: str) -> Delivery:
        """Wake the oldest node waiting for ``name`` with this event, or leave it stored."""
        run_id = run["run_id"]
        for round_ in range(2 * MAX_CAS_ROUNDS):
            ev = self._inbox_row(run_id, event_id, serial=round_ > 0)
            if ev is None or ev.get("consumed_by") is not None:
                return Delivery(
                    outcome=DeliveryOutcome.STORED
                )  # a suspend (or another delivery of it) took it
            waiters = self._waiters(run, name)
            if not waiters:
                return Delivery(outcome=DeliveryOutcome.STORED)
            w = waiters[0]
            token = self._claim(run, ev, w["node_id"], w["iteration"], "wake")
            if token is None:
                continue  # taken or changed meanwhile: read it again
            woke = self._wake_by_event(run, w, event_id)
            if woke == "woke":
                return Delivery(
                    outcome=DeliveryOutcome.MATCHED, node_id=w["node_id"], iteration=w["iteration"]
                )
            if woke == "by-other":
                return Delivery(
                    outcome=DeliveryOutcome.STORED
                )  # a redelivery of this event finished the wake
            # The node was woken otherwise (its timer) or cancelled: give the event back.
            self._release(run, event_id, token)
        raise StateError(f"run {run_id!r}: matching event {event_id!r} lost too many races")

    def _waiters(self, run: Row, name: str) -> list[Row]:
        """Nodes parked waiting for ``name``, the longest waiting first (checked node rows)."""
        run_id = run["run_id"]
        keys = [
            (run_id, w["node_id"], w["iteration"])
            for w in self.s.conn().execute("waits_get", (run_id,))
        ]
        out: list[Row] = []
        for row in self.s.node_rows(keys):
            if row is None:
                continue
            if pending_effects(row) is not None:
                self.fx.repair_node(row, run, reread_run=False)
            if (
                row["status"] == NodeStatus.WAITING
                and row.get("woken") is None
                and row.get("wait_event") == name
            ):
                out.append(row)
        return sorted(out, key=lambda r: (r.get("updated_at") or 0.0, r["node_id"], r["iteration"]))

    def _wake_by_event(self, run: Row, node: Row, event_id: str) -> str:
        """Wake a parked node with the event: ``woke``, ``by-other`` (woken with it) or ``no``."""
        key = (node["run_id"], node["node_id"], node["iteration"])
        seen = node
        for _ in range(MAX_CAS_ROUNDS):
            at, ts = self.s.now()
            parked, wait = node_of(seen), wait_of(seen)
            assert parked is not None and wait is not None
            change = waits.match(parked, wait, event_id=event_id, now=at)
            assert change.wait is not None
            eff = self.w.node_effects(
                change.follow, at=at, ts=ts, iteration=key[2], timer=hint_of(seen)
            )
            cols = (change.wait.woken, change.wait.woke_event)
            if self.waits.node_cas("node_wake", seen, cols, eff, run) is not None:
                return "woke"
            now = self.s.node_row(*key, serial=True)
            if (
                now is not None
                and now.get("woken") == "event"
                and now.get("woke_event") == event_id
            ):
                return "by-other"
            if now is None or now.get("lwt_op") != seen["lwt_op"]:
                return "no"
            # Timed out without applying: the node is as it was; try again.
        raise StateError(f"run {key[0]!r}: waking {key[1]!r} timed out {MAX_CAS_ROUNDS} times")

    def _redelivered(self, run: Row, ev: Row) -> Delivery:
        """A known event id: finish a delivery cut short, then report it (see the module doc)."""
        if runs.live(run["status"]):
            woke = self._resume(run, ev)
            if woke is not None:
                return woke
        admitted = waits.admit_event(
            run["status"], seen=True, name=ev["name"], event_id=ev["event_id"]
        )
        if admitted.history is not None:
            self._note(run, admitted.history)
        return Delivery(outcome=admitted.outcome or DeliveryOutcome.DUPLICATE)

    def _resume(self, run: Row, ev: Row) -> Delivery | None:
        """Complete an earlier delivery of ``ev``; a Delivery only if this call woke a node."""
        event_id, name = ev["event_id"], ev["name"]
        if ev.get("consumed_by") is None:
            again = self._match(run, event_id, name)
            return again if again.outcome == DeliveryOutcome.MATCHED else None
        key = (run["run_id"], ev["consumed_by"], ev.get("consumed_it") or 0)
        node = self.s.node_row(*key)
        if node is not None and pending_effects(node) is not None:
            self.fx.repair_node(node, run, reread_run=False)  # a wake cut short: finish it
        if node is not None and node.get("woken") == "event" and node.get("woke_event") == event_id:
            return None  # delivered
        if node is not None and node["status"] in NODE_ACTIVE:
            how = ev.get("consumed_how")
            parked = node["status"] == NodeStatus.WAITING and node.get("woken") is None
            if how == "wake" and parked and node.get("wait_event") == name:
                # Claimed for this node, which still waits: wake it (as the claimer would).
                if self._wake_by_event(run, node, event_id) == "woke":
                    return Delivery(
                        outcome=DeliveryOutcome.MATCHED, node_id=key[1], iteration=key[2]
                    )
                return None
            if how == "suspend" and node["status"] == NodeStatus.RUNNING:
                return None  # its consumer runs and records it
        # The claimant was woken otherwise, or is gone: give the event back, deliver it again.
        if self._release(run, event_id, ev["lwt_op"]):
            again = self._match(run, event_id, name)
            return again if again.outcome == DeliveryOutcome.MATCHED else None
        return None

    # --- suspending -------------------------------------------------------------------------
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
        key = (run_id, node_id, iteration)
        run, row = self.s.run_and_node(*key)
        first_due: float | None = None
        decided = False
        for round_ in range(MAX_CAS_ROUNDS):
            if row is None or not waits.suspendable(node_of(row)):
                return None
            if event is not None and run is not None:
                wake = self._take_event(run, row, event)
                if wake is not None:
                    return wake
            if not decided:
                # As on SQLite, a node suspended before keeps its first timer.
                first_due, decided = self.waits.first_due(key, row, due_at), True
            parked = self.waits.park(run, row, event, first_due)
            if parked is None:
                row = self.s.node_row(*key, serial=True)  # it changed under us: decide again
                continue
            if event is not None and any(
                e["name"] == event and e.get("consumed_by") is None for e in self._inbox(run_id)
            ):
                # An event came in while we parked and its delivery did not see us parked:
                # take it ourselves, unless someone woke us meanwhile (then they dispatch).
                if not self.waits.unpark(run, key, parked):
                    return None
                # The delivery that brought it may be claiming it for us right now: let it
                # finish (its wake fails, it gives the event back) before taking it, or the
                # two of us could park, claim, un-park and give back in lockstep.
                backoff(round_)
                row = self.s.node_row(*key, serial=True)
                continue
            self.waits.settle_waiting(run_id)
            return None
        raise StateError(f"run {run_id!r}: suspending {node_id!r} lost {MAX_CAS_ROUNDS} races")

    def _take_event(self, run: Row, row: Row, event: str) -> Wakeup | None:
        """Consume the oldest unconsumed ``event`` (or one this node claimed before) for ``row``."""
        key = (row["run_id"], row["node_id"], row["iteration"])
        events = self._inbox(key[0])
        mine = [
            e
            for e in events
            if e.get("consumed_by") == key[1]
            and (e.get("consumed_it") or 0) == key[2]
            and e.get("consumed_how") == "suspend"
        ]
        free = [e for e in events if e["name"] == event and e.get("consumed_by") is None]
        for candidate in (*mine[:1], *free):
            ev = candidate
            if ev.get("consumed_by") is None:
                token = self._claim(run, ev, key[1], key[2], "suspend")
                if token is None:
                    continue  # another node took it
                ev = {**ev, "lwt_op": token}
            return self._record_consumed(run, key, row, ev)
        return None

    def _record_consumed(self, run: Row, key: Key, row: Row, ev: Row) -> Wakeup | None:
        """Write the claimed event on the running node's row (what ``get_wakeup`` returns)."""
        event_id, name = ev["event_id"], ev["name"]
        current: Row | None = row
        for _ in range(MAX_CAS_ROUNDS):
            if current is None or not waits.suspendable(node_of(current)):
                break
            at, ts = self.s.now()
            running = node_of(current)
            assert running is not None
            taken = InboxEvent(event_id=event_id, name=name, payload=loads(ev["payload"]))
            change = waits.consume(running, taken, due_at=None)
            assert change.wait is not None
            eff = self.w.node_effects(change.follow, at=at, ts=ts, iteration=key[2])
            cols = (change.wait.event, change.wait.woke_event)
            if self.waits.node_cas("node_consumed", current, cols, eff, run) is not None:
                wakeup = waits.wakeup_of(change.wait, taken.payload)
                assert wakeup is not None
                return wakeup
            current = self.s.node_row(*key, serial=True)
        # The node stopped running under us (cancelled, completed, or parked by a duplicate
        # delivery of its task): the event is not its to keep; give it back and deliver it.
        if self._release(run, event_id, ev["lwt_op"]):
            self._match(run, event_id, name)
        return None
