"""What lets the dispatch check tell a lost node task from one a worker holds.

kombu 5.7's Redis transport takes a message with ``BRPOP`` (which removes it
from the list) and records it as unacknowledged (``HSET unacked`` +
``ZADD unacked_index``, ``QoS.append``) only after reading and parsing the
reply: a worker main process killed in between loses the message, and neither
``task_acks_late`` nor the visibility timeout ever sees it. Three records in
Redis, under ``FLOWBRIDGE_REDIS_PREFIX``, make that loss visible:

* every task message flowbridge sends carries ``flowbridge-sent-at`` (the
  sender's wall time), stamped here for messages the port did not stamp;
* ``flowbridge:sent:<queue>``: the node tasks sent to a shard queue and not yet
  received, scored by that time (the port adds them before publishing, each
  worker removes the ones it received);
* ``flowbridge:live:<worker>``: each worker main process writes, every
  ``LIVE_PERIOD_S``, its pid and the node tasks it holds (reserved, waiting for
  their countdown, or running: ``celery.worker.state.requests``).

``tasks.worker.whereabouts`` reads them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from typing import Any

import redis
from celery import signals
from celery.worker import state as worker_state

from tasks.constants import (
    BRANCH_TASK,
    LIVE_KEY,
    LIVE_PERIOD_S,
    LIVE_TTL_S,
    LIVE_WORKERS_KEY,
    RUN_NODE_TASK,
    SENT_AT_HEADER,
    SENT_KEY,
)
from tasks.faults import crash_point
from tasks.settings import Settings

__all__ = ["FORGET_SENT", "NODE_TASKS", "Liveness", "node_member", "node_of_kwargs"]

log = logging.getLogger("flowbridge.liveness")

#: The tasks that carry one node's attempt (a chord branch is one too).
NODE_TASKS = frozenset({RUN_NODE_TASK, BRANCH_TASK})


#: Remove sent-record members (KEYS[i], ARGV[2i-1]) recorded no later than ARGV[2i]: a node
#: sent again since (a retry) keeps its newer record.
FORGET_SENT = """
for i, key in ipairs(KEYS) do
  local member, sent = ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local score = redis.call('ZSCORE', key, member)
  if score and tonumber(score) <= sent then redis.call('ZREM', key, member) end
end
return 0
"""


def node_member(run_id: str, node_id: str, iteration: int) -> str:
    """The sent-record member of a node task: ``[run_id, node_id, iteration]`` as JSON."""
    return json.dumps([run_id, node_id, iteration], separators=(",", ":"))


def node_of_kwargs(name: str, kwargs: Any) -> str | None:
    """The member of a node task from its name and kwargs; None for any other task."""
    if name not in NODE_TASKS or not isinstance(kwargs, dict) or kwargs.get("wake"):
        # A wake-up call is for a waiting node: its timer row in the store recovers it.
        return None
    run_id, node_id = kwargs.get("run_id"), kwargs.get("node_id")
    if not isinstance(run_id, str) or not isinstance(node_id, str):
        return None
    return node_member(run_id, node_id, int(kwargs.get("iteration") or 0))


@signals.before_task_publish.connect
def _stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    # Every message gets a send time, so the check can compare any queue's oldest message
    # (a beat task, an activation) with the node tasks recorded as sent to that queue.
    if headers is not None:
        headers.setdefault(SENT_AT_HEADER, time.time())


#: Node tasks this worker received, as (queue, member, sent at), until the next record
#: removes them from the sent records.
_received: deque[tuple[str, str, float]] = deque()


@signals.task_received.connect
def _note_received(request: Any = None, **_: Any) -> None:
    # In the worker's main process, just after kombu recorded the message as unacknowledged.
    member = node_of_kwargs(getattr(request, "name", ""), getattr(request, "kwargs", None))
    if member is not None:
        crash_point("after_receive")
    queue = (getattr(request, "delivery_info", None) or {}).get("routing_key")
    sent_at = (getattr(request, "request_dict", None) or {}).get(SENT_AT_HEADER)
    if member is not None and queue and isinstance(sent_at, int | float):
        _received.append((str(queue), member, float(sent_at)))


def _held() -> list[str]:
    """Members of the node tasks this process holds (``celery.worker.state.requests``)."""
    for _ in range(5):
        try:
            requests = list(worker_state.requests.values())
            break
        except RuntimeError:  # the consumer changed the dict while this thread copied it
            continue
    else:
        return []
    held = set()
    for req in requests:
        member = node_of_kwargs(getattr(req, "name", ""), getattr(req, "kwargs", None))
        if member is not None:
            held.add(member)
    return sorted(held)


class Liveness:
    """A worker main process's liveness record, written from a daemon thread."""

    def __init__(self, client: redis.Redis[bytes], settings: Settings, *, name: str) -> None:
        """Describe this worker; nothing is written until ``start``."""
        self.client = client
        self.name = name
        self._prefix = settings.redis_prefix
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._forget = client.register_script(FORGET_SENT)

    def start(self) -> None:
        """Write the record now and every ``LIVE_PERIOD_S`` until ``stop``."""
        try:
            self._write()
        except redis.RedisError as exc:
            log.warning("liveness record not written (retried every %ss): %s", LIVE_PERIOD_S, exc)
        self._thread = threading.Thread(target=self._loop, name="liveness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop writing and delete the record (a clean stop hands its tasks back itself)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=LIVE_PERIOD_S * 2)
        with contextlib.suppress(redis.RedisError):
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(self._prefix + LIVE_KEY + self.name)
            pipe.zrem(self._prefix + LIVE_WORKERS_KEY, self.name)
            pipe.execute()

    def _loop(self) -> None:
        while not self._stop.wait(LIVE_PERIOD_S):
            try:
                self._write()
            except redis.RedisError as exc:
                log.debug("liveness record not written: %s", exc)

    def _write(self) -> None:
        received: list[tuple[str, str, float]] = []
        while _received:
            received.append(_received.popleft())
        now = time.time()
        record = {"at": now, "pid": os.getpid(), "host": socket.gethostname(), "held": _held()}
        pipe = self.client.pipeline(transaction=False)
        if received:
            keys = [self._prefix + SENT_KEY + queue for queue, _, _ in received]
            args = [a for _, member, sent in received for a in (member, repr(sent))]
            self._forget(keys=keys, args=args, client=pipe)
        pipe.set(self._prefix + LIVE_KEY + self.name, json.dumps(record), ex=LIVE_TTL_S)
        pipe.zadd(self._prefix + LIVE_WORKERS_KEY, {self.name: now})
        try:
            pipe.execute()
        except redis.RedisError:
            # Put the received ones back: removing them later is as good.
            _received.extend(received)
            raise
