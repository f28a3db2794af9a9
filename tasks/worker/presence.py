"""Which processes share the shard queues, and with which nodes and blueprints.

Two records in Redis, under ``FLOWBRIDGE_REDIS_PREFIX`` (processes that share
it share the shard queues):

* ``flowbridge:registry:<process>`` -- each worker and bridge writes the node
  and blueprint names it has, with a TTL it refreshes while it runs, and
  compares them with the others' at start-up: a rolling deploy, or two
  workers started with different ``FLOWBRIDGE_APP``, get a warning naming the
  difference instead of failing runs without explanation.
* ``flowbridge:missing:<run>:<node>:<iteration>`` -- the workers that received
  a node whose ``uses`` they have not registered, and since when; the engine
  requeues the node for ``FLOWBRIDGE_MISSING_NODE_S`` (another worker may have
  it), then fails it naming those workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass

import redis

from tasks.constants import (
    MISSING_NODE_KEY,
    MISSING_NODE_TTL_EXTRA_S,
    REGISTRY_KEY,
    REGISTRY_REFRESH_S,
    REGISTRY_TTL_S,
)
from tasks.settings import Settings

__all__ = ["Presence", "note_missing"]

log = logging.getLogger("flowbridge.presence")

_FIRST = "~first"


def note_missing(
    client: redis.Redis[bytes],
    settings: Settings,
    run_id: str,
    node_id: str,
    iteration: int,
    worker: str,
) -> tuple[list[str], float]:
    """Record that ``worker`` lacked the node; returns every such worker, and for how long."""
    key = f"{settings.redis_prefix}{MISSING_NODE_KEY}{run_id}:{node_id}:{iteration}"
    now = time.time()
    try:
        pipe = client.pipeline(transaction=True)
        pipe.hsetnx(key, _FIRST, now)
        pipe.hset(key, worker, now)
        pipe.expire(key, int(settings.missing_node_s + MISSING_NODE_TTL_EXTRA_S))
        pipe.hgetall(key)
        seen: dict[bytes, bytes] = pipe.execute()[-1]
    except redis.RedisError as exc:
        # Without the record the wait cannot be bounded: fail now rather than loop.
        log.warning("cannot record the missing node in Redis: %s", exc)
        return [worker], float("inf")
    first = float(seen.pop(_FIRST.encode(), now))
    return sorted(w.decode() for w in seen), now - first


@dataclass(frozen=True)
class Registered:
    """What one process has registered: its role, name, node and blueprint names."""

    role: str
    name: str
    nodes: tuple[str, ...]
    blueprints: tuple[str, ...]

    @property
    def digest(self) -> str:
        """A short hash of the names, equal for processes with the same code and blueprints."""
        text = json.dumps([self.nodes, self.blueprints])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def differences(self, other: Registered) -> list[str]:
        """What ``other`` has that this lacks and the reverse, in words."""
        out = []
        for kind, mine, theirs in (
            ("nodes", self.nodes, other.nodes),
            ("blueprints", self.blueprints, other.blueprints),
        ):
            if lacking := sorted(set(theirs) - set(mine)):
                out.append(f"it has {kind} this {self.role} lacks: {', '.join(lacking)}")
            if extra := sorted(set(mine) - set(theirs)):
                out.append(f"it lacks {kind} this {self.role} has: {', '.join(extra)}")
        return out


class Presence:
    """This process's registry record in Redis: announced, refreshed, withdrawn."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        settings: Settings,
        *,
        role: str,
        name: str,
        nodes: Collection[str],
        blueprints: Collection[str],
    ) -> None:
        """Describe this process; nothing is written until ``announce``."""
        self.client = client
        self.settings = settings
        self.me = Registered(role, name, tuple(sorted(nodes)), tuple(sorted(blueprints)))
        self._prefix = f"{settings.redis_prefix}{REGISTRY_KEY}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def announce(self) -> list[str]:
        """Write this process's record and warn about each peer whose names differ."""
        warnings = []
        try:
            for peer in self._peers():
                if peer.name != self.me.name and peer.digest != self.me.digest:
                    warnings.append(
                        f"{peer.role} {peer.name} shares the shard queues "
                        f"(FLOWBRIDGE_REDIS_PREFIX={self.settings.redis_prefix!r}) with "
                        f"other nodes or blueprints than this {self.me.role} {self.me.name}: "
                        + "; ".join(self.me.differences(peer))
                        + ". Runs may fail on the process that lacks a node; deploy the same "
                        "FLOWBRIDGE_APP and FLOWBRIDGE_BLUEPRINTS everywhere."
                    )
            self._write()
        except redis.RedisError as exc:
            log.warning("could not compare registries with other processes: %s", exc)
            return []
        for text in warnings:
            log.warning("%s", text)
        return warnings

    def start_refresh(self) -> None:
        """Keep the record alive from a daemon thread until ``withdraw``."""
        self._thread = threading.Thread(target=self._refresh, name="presence", daemon=True)
        self._thread.start()

    def withdraw(self) -> None:
        """Stop refreshing and delete the record (a clean stop leaves no stale entry)."""
        self._stop.set()
        with contextlib.suppress(redis.RedisError):  # else it expires by itself
            self.client.delete(self._prefix + self.me.name)

    def _refresh(self) -> None:
        while not self._stop.wait(REGISTRY_REFRESH_S):
            try:
                self._write()
            except redis.RedisError as exc:
                log.debug("presence refresh failed: %s", exc)

    def _write(self) -> None:
        value = json.dumps(self.me.__dict__)
        self.client.set(self._prefix + self.me.name, value, ex=REGISTRY_TTL_S)

    def _peers(self) -> list[Registered]:
        keys = list(self.client.scan_iter(match=self._prefix + "*", count=500))
        peers = []
        for raw in self.client.mget(keys) if keys else []:
            if raw is None:
                continue
            data = json.loads(raw)
            peers.append(
                Registered(
                    data["role"], data["name"], tuple(data["nodes"]), tuple(data["blueprints"])
                )
            )
        return peers
