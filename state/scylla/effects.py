"""The stored format of the ``effects`` column: a conditional write's staged follow-up writes.

A conditional write (an LWT on a run or node row) stores the writes that must
follow it in the same LWT; whoever finds them not yet marked applied applies
them again (``state.scylla.apply``). The format is part of what is stored: a
row written by an older release is repaired by a newer one, so fields are
only ever added (``fallback`` is still read: older releases wrote it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from state.errors import StateError
from state.records import OutboxMessage

__all__ = ["Effects", "FailRun", "HistoryItem", "IndexMove", "decode_effects", "encode_effects"]


@dataclass(frozen=True, kw_only=True)
class HistoryItem:
    """A history event staged by a conditional write; its id makes the replay an upsert."""

    event_id: str
    kind: str
    node_id: str | None = None
    data: Any = None


@dataclass(frozen=True, kw_only=True)
class IndexMove:
    """Move a run's index hint from ``(old_status, old_bucket)`` to ``(status, bucket)``."""

    status: str
    bucket: int
    old_status: str | None = None
    old_bucket: int | None = None


@dataclass(frozen=True, kw_only=True)
class FailRun:
    """Fail the run (if still active) after a node failed for good."""

    error: str
    outbox: tuple[OutboxMessage, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Effects:
    """The follow-up writes of one conditional write, stored with it so a crash can be repaired.

    Every write here is idempotent (``IF NOT EXISTS`` records, upserts stamped
    ``USING TIMESTAMP ts``, outbox rows by stable id), so applying the same
    effects twice is the same as once. Node-level parts (``pending`` ...
    ``fail_run``) apply only while the run is active.
    """

    #: When the conditional write was decided (seconds) and the write timestamp it implies (µs).
    at: float
    ts: int
    iteration: int = 0
    history: tuple[HistoryItem, ...] = ()
    outbox: tuple[OutboxMessage, ...] = ()
    #: Record progress on the run (moves its index hint to the current bucket).
    touch: bool = False
    pending: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    #: (join_id, predecessor, outcome)
    arrivals: tuple[tuple[str, str, str], ...] = ()
    context: dict[str, Any] = field(default_factory=dict)
    #: Context keys to delete (schema 3).
    context_deletes: tuple[str, ...] = ()
    #: Pending records at other iterations: (node id, iteration) (schema 3: loops).
    pending_at: tuple[tuple[str, int], ...] = ()
    fallback: str | None = None
    fail_run: FailRun | None = None
    # --- run-level parts ---
    start_nodes: tuple[str, ...] = ()
    index: IndexMove | None = None
    #: The run reached a terminal status: give all its rows the retention TTL.
    finish: bool = False
    #: Cancel the run's active nodes with this reason.
    cancel_nodes: str | None = None
    # --- waiting (schema 2) ---
    #: A parked node was woken: a waiting run is running again.
    wake_run: bool = False
    #: ``(bucket, due_at, park_op)`` of the node's timer hint, deleted once it has fired.
    timer: tuple[int, float, str] | None = None
    # --- a retry (schema 3) ---
    #: ``(node_id, lwt_op)`` of records to delete, each only if its token is still that one.
    reset: tuple[tuple[str, str], ...] = ()
    #: ``(join_id, predecessor)`` arrivals the reset records made, deleted as of ``ts``.
    unarrive: tuple[tuple[str, str], ...] = ()
    #: Records to create pending after the reset (iteration 0).
    retry_pending: tuple[str, ...] = ()
    #: Lift the retention TTL from the run's rows (a finished run lives again).
    revive: bool = False

    @property
    def empty(self) -> bool:
        """Whether applying these effects would write nothing."""
        return self == Effects(at=self.at, ts=self.ts, iteration=self.iteration)


def _outbox_json(m: OutboxMessage) -> dict[str, Any]:
    d = {"id": m.id, "topic": m.topic, "key": m.key, "value": m.value, "at": m.created_at}
    if m.headers:
        d["headers"] = [list(h) for h in m.headers]
    return d


def _outbox_from(d: dict[str, Any]) -> OutboxMessage:
    return OutboxMessage(
        id=d["id"],
        topic=d["topic"],
        key=d["key"],
        value=d["value"],
        created_at=d["at"],
        headers=tuple((str(k), str(v)) for k, v in d.get("headers", ())),
    )


def encode_effects(e: Effects) -> str:
    """Serialise effects as compact JSON (defaults omitted)."""
    d: dict[str, Any] = {"v": 1, "at": e.at, "ts": e.ts}
    if e.iteration:
        d["it"] = e.iteration
    if e.history:
        d["history"] = [[h.event_id, h.kind, h.node_id, h.data] for h in e.history]
    if e.outbox:
        d["outbox"] = [_outbox_json(m) for m in e.outbox]
    if e.touch:
        d["touch"] = True
    if e.pending:
        d["pending"] = list(e.pending)
    if e.skipped:
        d["skipped"] = list(e.skipped)
    if e.arrivals:
        d["arrivals"] = [list(a) for a in e.arrivals]
    if e.context:
        d["context"] = e.context
    if e.context_deletes:
        d["context_del"] = list(e.context_deletes)
    if e.pending_at:
        d["pending_at"] = [list(p) for p in e.pending_at]
    if e.fallback is not None:
        d["fallback"] = e.fallback
    if e.fail_run is not None:
        d["fail_run"] = {
            "error": e.fail_run.error,
            "outbox": [_outbox_json(m) for m in e.fail_run.outbox],
        }
    if e.start_nodes:
        d["start"] = list(e.start_nodes)
    if e.index is not None:
        i = e.index
        d["index"] = [i.status, i.bucket, i.old_status, i.old_bucket]
    if e.finish:
        d["finish"] = True
    if e.cancel_nodes is not None:
        d["cancel"] = e.cancel_nodes
    if e.wake_run:
        d["wake"] = True
    if e.timer is not None:
        d["timer"] = list(e.timer)
    if e.reset:
        d["reset"] = [list(r) for r in e.reset]
    if e.unarrive:
        d["unarrive"] = [list(u) for u in e.unarrive]
    if e.retry_pending:
        d["retry_pending"] = list(e.retry_pending)
    if e.revive:
        d["revive"] = True
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


def decode_effects(text: str | None) -> Effects | None:
    """Parse what ``encode_effects`` wrote; None for no effects."""
    if not text:
        return None
    d = json.loads(text)
    if d.get("v") != 1:
        raise StateError(f"stored effects have format {d.get('v')!r}; this flowbridge reads 1")
    fail = d.get("fail_run")
    idx = d.get("index")
    return Effects(
        at=d["at"],
        ts=d["ts"],
        iteration=d.get("it", 0),
        history=tuple(
            HistoryItem(event_id=h[0], kind=h[1], node_id=h[2], data=h[3])
            for h in d.get("history", ())
        ),
        outbox=tuple(_outbox_from(m) for m in d.get("outbox", ())),
        touch=d.get("touch", False),
        pending=tuple(d.get("pending", ())),
        skipped=tuple(d.get("skipped", ())),
        arrivals=tuple((a[0], a[1], a[2]) for a in d.get("arrivals", ())),
        context=d.get("context", {}),
        context_deletes=tuple(d.get("context_del", ())),
        pending_at=tuple((str(p[0]), int(p[1])) for p in d.get("pending_at", ())),
        fallback=d.get("fallback"),
        fail_run=None
        if fail is None
        else FailRun(error=fail["error"], outbox=tuple(_outbox_from(m) for m in fail["outbox"])),
        start_nodes=tuple(d.get("start", ())),
        index=None
        if idx is None
        else IndexMove(status=idx[0], bucket=idx[1], old_status=idx[2], old_bucket=idx[3]),
        finish=d.get("finish", False),
        cancel_nodes=d.get("cancel"),
        wake_run=d.get("wake", False),
        timer=None
        if d.get("timer") is None
        else (int(d["timer"][0]), float(d["timer"][1]), str(d["timer"][2])),
        reset=tuple((str(r[0]), str(r[1])) for r in d.get("reset", ())),
        unarrive=tuple((str(u[0]), str(u[1])) for u in d.get("unarrive", ())),
        retry_pending=tuple(d.get("retry_pending", ())),
        revive=d.get("revive", False),
    )
