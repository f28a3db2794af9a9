"""Where each node task is: in a queue, held by a live worker, lost, or orphaned.

The dispatch check (``tasks.reconciler.check_dispatch``) asks this through the
port. It reads, in a few pipelined round trips and never per run:

1. the workers' liveness records (``tasks.worker.liveness``): a worker whose
   record is older than ``LIVE_STALE_S`` is dead;
2. kombu's unacknowledged hash: a node task in it that no live worker holds,
   taken before every live worker last wrote its record, belongs to a dead
   worker (``orphaned``): kombu would restore it only after the visibility
   timeout (``FLOWBRIDGE_VISIBILITY_TIMEOUT_S``);
3. per shard queue, its oldest message (``LINDEX key -1``: kombu pushes with
   LPUSH and pops with BRPOP, so the right end is the next out) and the sent
   records older than both the deadline and that message: a node task sent
   before the oldest message still queued has left the queue; if it is neither
   unacknowledged nor held by a live worker, no worker has it (``lost``).

A queue's backlog therefore costs nothing (its sent records are newer than its
oldest message and are not read); the work is bounded by the tasks in flight.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from tasks.constants import (
    DISPATCH_SLACK_S,
    LIVE_KEY,
    LIVE_STALE_S,
    LIVE_WORKERS_KEY,
    SENT_AT_HEADER,
    SENT_KEY,
)
from tasks.port import LOST, ORPHANED, LostTask
from tasks.worker.liveness import FORGET_SENT, node_of_kwargs

__all__ = ["Whereabouts"]

log = logging.getLogger("flowbridge.whereabouts")

#: kombu's Redis keys of unacknowledged messages (``Channel.unacked_key``/``unacked_index_key``).
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"

#: A worker name is dropped from the set of workers after this long without a record.
FORGOTTEN_WORKER_S = 3600.0


@dataclass(frozen=True)
class _Unacked:
    member: str
    queue: str
    sent_at: float | None
    taken_at: float


def _sent_at(message: Any) -> float | None:
    headers = message.get("headers") if isinstance(message, dict) else None
    value = (headers or {}).get(SENT_AT_HEADER)
    return float(value) if isinstance(value, int | float) else None


def _member_of(message: Any) -> str | None:
    """The node a kombu message (``{"body", "headers", "properties"}``) is a task of."""
    if not isinstance(message, dict):
        return None
    headers = message.get("headers") or {}
    name = headers.get("task")
    if not isinstance(name, str):
        return None
    body: Any = message.get("body")
    try:
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        _, kwargs, _ = json.loads(body)
    except (TypeError, ValueError):
        return None
    return node_of_kwargs(name, kwargs)


class Whereabouts:
    """The dispatch check's view of Redis: sent records, queues, unacked messages, workers."""

    def __init__(self, client: redis.Redis[bytes], *, prefix: str, queues: Sequence[str]) -> None:
        """Read the deployment's keys (``prefix``) for these shard queues."""
        self.client = client
        self.prefix = prefix
        self.queues = tuple(queues)
        self._forget = client.register_script(FORGET_SENT)

    def sent_key(self, queue: str) -> str:
        """The sent records of one queue."""
        return f"{self.prefix}{SENT_KEY}{queue}"

    def record_sent(self, entries: Sequence[tuple[str, str, float]]) -> None:
        """Record node tasks (queue, member, sent at) as sent, before they are published."""
        pipe = self.client.pipeline(transaction=False)
        for queue, member, sent_at in entries:
            pipe.zadd(self.sent_key(queue), {member: sent_at})
        pipe.execute()

    def find(self, *, deadline_s: float, limit: int, now: float | None = None) -> list[LostTask]:
        """Node tasks orphaned by a dead worker, then those lost ``deadline_s`` after their send."""
        now = time.time() if now is None else now
        held, oldest_record = self._live(now)
        unacked = self._unacked()
        found: list[LostTask] = []
        for tag, u in unacked.items():
            # Taken before every live worker last wrote its record, and none of them holds it.
            if u.member not in held and u.taken_at < oldest_record - DISPATCH_SLACK_S:
                run_id, node_id, iteration = json.loads(u.member)
                found.append(
                    LostTask(
                        run_id=run_id,
                        node_id=node_id,
                        iteration=iteration,
                        why=ORPHANED,
                        sent_at=u.sent_at if u.sent_at is not None else u.taken_at,
                        queue=u.queue,
                        ref=tag,
                    )
                )
        in_flight = held | {u.member for u in unacked.values()}
        pipe = self.client.pipeline(transaction=False)
        for queue in self.queues:
            pipe.lindex(self.prefix + queue, -1)
        heads = pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        asked = []
        for queue, head in zip(self.queues, heads, strict=True):
            cutoff = now - deadline_s
            if head is not None:
                oldest = _sent_at(_loads(head))
                if oldest is None:
                    continue  # a message from elsewhere: nothing to compare with, wait
                cutoff = min(cutoff, oldest - DISPATCH_SLACK_S)
            pipe.zrangebyscore(
                self.sent_key(queue), "-inf", f"({cutoff!r}", start=0, num=limit, withscores=True
            )
            asked.append(queue)
        for queue, rows in zip(asked, pipe.execute() if asked else [], strict=True):
            for raw, score in rows:
                member = raw.decode()
                if member in in_flight:
                    continue
                run_id, node_id, iteration = json.loads(member)
                found.append(
                    LostTask(
                        run_id=run_id,
                        node_id=node_id,
                        iteration=iteration,
                        why=LOST,
                        sent_at=float(score),
                        queue=queue,
                        ref=member,
                    )
                )
        return found[:limit]

    def still_lost(self, task: LostTask) -> bool:
        """Whether the sent record (lost) or the unacked message (orphaned) is unchanged."""
        if task.why == ORPHANED:
            return bool(self.client.hexists(self.prefix + UNACKED_KEY, task.ref))
        score = self.client.zscore(self.sent_key(task.queue), task.ref)
        return score is not None and float(score) <= task.sent_at

    def forget(self, task: LostTask) -> None:
        """Drop a lost task's sent record, unless the node was sent again since."""
        if task.why == LOST:
            self._forget(keys=[self.sent_key(task.queue)], args=[task.ref, repr(task.sent_at)])

    def requeue(self, task: LostTask, *, takeover: bool) -> bool:
        """Move an orphaned message back to the head of its queue, once (a transaction).

        As kombu's own restore does, but marked redelivered only with ``takeover``
        (its node is ``running`` on the dead worker): a redelivered task takes over
        a running node, which a task that never ran must not do.
        """
        unacked, index = self.prefix + UNACKED_KEY, self.prefix + UNACKED_INDEX_KEY
        moved: list[bool] = []

        def move(pipe: redis.client.Pipeline[bytes]) -> None:
            moved.clear()
            # Before MULTI the pipeline runs commands at once (it is WATCHing the hash).
            raw: bytes | None = pipe.hget(unacked, task.ref)  # type: ignore[assignment]
            pipe.multi()
            if raw is None:
                return
            message, _, queue = _loads(raw)
            if takeover:
                message.setdefault("headers", {})["redelivered"] = True
                message.setdefault("properties", {}).setdefault("delivery_info", {})[
                    "redelivered"
                ] = True
            pipe.zrem(index, task.ref)
            pipe.hdel(unacked, task.ref)
            pipe.rpush(self.prefix + str(queue), json.dumps(message))
            sent_at = _sent_at(message)
            member = _member_of(message)
            if member is not None and sent_at is not None:
                # Sent records are what the check reads: lost again, it is found again.
                pipe.zadd(self.sent_key(str(queue)), {member: sent_at})
            moved.append(True)

        self.client.transaction(move, unacked)
        return bool(moved)

    def _live(self, now: float) -> tuple[set[str], float]:
        """Node tasks live workers hold, and the time of the oldest live record."""
        names = [n.decode() for n in self.client.zrange(self.prefix + LIVE_WORKERS_KEY, 0, -1)]
        held: set[str] = set()
        oldest = now
        if not names:
            return held, oldest
        records = self.client.mget([self.prefix + LIVE_KEY + n for n in names])
        gone = []
        for name, raw in zip(names, records, strict=True):
            record = _loads(raw) if raw is not None else None
            if not isinstance(record, dict):
                gone.append(name)
                continue
            at = float(record.get("at") or 0.0)
            if now - at >= LIVE_STALE_S:
                if now - at >= FORGOTTEN_WORKER_S:
                    gone.append(name)
                continue
            oldest = min(oldest, at)
            held.update(str(m) for m in record.get("held") or ())
        if gone:
            self.client.zrem(self.prefix + LIVE_WORKERS_KEY, *gone)
        return held, oldest

    def _unacked(self) -> dict[str, _Unacked]:
        """The unacknowledged node tasks (kombu's hash) by delivery tag."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.prefix + UNACKED_KEY)
        pipe.zrange(self.prefix + UNACKED_INDEX_KEY, 0, -1, withscores=True)
        entries, scores = pipe.execute()
        taken = {t.decode(): float(s) for t, s in scores}
        out: dict[str, _Unacked] = {}
        for raw_tag, raw in entries.items():
            tag = raw_tag.decode()
            try:
                message, _, queue = _loads(raw)
            except (TypeError, ValueError):
                continue
            member = _member_of(message)
            if member is None or tag not in taken:
                continue
            out[tag] = _Unacked(member, str(queue), _sent_at(message), taken[tag])
        return out


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
