"""Redis leases on the outbox shards: each shard is relayed by one bridge at a time.

Every bridge's relay is a member (a sorted set scored by its last refresh); a
member holds at most its fair share, ``ceil(OUTBOX_SHARDS / live members)``, of
the shard leases ``<prefix>flowbridge:outbox-lease:<shard>`` (``SET NX PX``,
renewed every third of the lease by a compare-and-set on the holder's value).
A bridge that joins takes free shards; one over its share releases the extra;
a dead one's leases expire after ``FLOWBRIDGE_OUTBOX_LEASE_S`` and are taken
over. The relay publishes a shard only while its local copy of the lease is
valid, counted from before the renewal was sent and less a safety margin, so a
holder that was paused or lost Redis stops before another can take the shard.
What is left is at-least-once's own window: a holder stopped (a GC, SIGSTOP)
for longer than the lease in the middle of a batch publishes that batch again
after the new holder did: a duplicate with the same ``flowbridge-id``, never a loss.

A worker's hint (one Redis list, popped by one relay) is passed on to the
other holders' own lists, so every shard's rows go out without waiting for a sweep.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from state.keys import OUTBOX_SHARDS
from state.locks import RELEASE_IF_HELD

__all__ = ["ShardLeases"]

log = logging.getLogger("flowbridge.outbox")

#: The lease is trusted locally for this fraction of its time (clock drift, a slow renewal).
SAFETY = 0.8

# Renew a lease only if this member still holds it (released as a run lock is).
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class ShardLeases:
    """This bridge's leases on outbox shards (refreshed by the relay's thread)."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        hint_key: str,
        lease_s: float,
        member: str | None = None,
        shards: int = OUTBOX_SHARDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Lease shards in ``client`` (a ``redis.Redis``) under ``prefix``; none until refreshed."""
        self.redis = client
        self.prefix = prefix
        self.hint_key = hint_key
        self.lease_s = lease_s
        self.member = member or f"relay-{uuid.uuid4().hex[:12]}"
        self.shards = shards
        self.clock = clock
        #: Shard -> the local time until which this member may publish it.
        self._valid_until: dict[int, float] = {}
        self._refresh_due = 0.0

    def _key(self, shard: int) -> str:
        return f"{self.prefix}flowbridge:outbox-lease:{shard}"

    @property
    def _members_key(self) -> str:
        return f"{self.prefix}flowbridge:outbox-relays"

    def _own_hint_key(self, member: str) -> str:
        return f"{self.prefix}flowbridge:outbox-hint:{member}"

    def held(self) -> frozenset[int]:
        """The shards this member may publish now (refreshes when due)."""
        now = self.clock()
        if now >= self._refresh_due:
            self.refresh()
            now = self.clock()
        return frozenset(s for s, until in self._valid_until.items() if until > now)

    def refresh(self) -> None:
        """Renew held leases, count live relays, then take or give shards to reach a fair share."""
        started = self.clock()
        before = set(self._valid_until)
        self._refresh_due = started + self.lease_s / 3
        until = started + self.lease_s * SAFETY
        lease_ms = int(self.lease_s * 1000)
        try:
            wall = time.time()
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(self._members_key, {self.member: wall})
            pipe.zremrangebyscore(self._members_key, "-inf", wall - self.lease_s)
            pipe.zcard(self._members_key)
            held = sorted(self._valid_until)
            for shard in held:
                pipe.eval(_RENEW, 1, self._key(shard), self.member, lease_ms)
            results = pipe.execute()
            live = max(int(results[2]), 1)
            kept = [s for s, ok in zip(held, results[3:], strict=True) if ok]
            lost = set(held) - set(kept)
            if lost:
                log.warning("outbox shards %s: lease lost to another relay", sorted(lost))
            self._valid_until = {s: until for s in kept}
            fair = math.ceil(self.shards / live)
            for shard in kept[fair:]:
                # Over the fair share (another relay joined): give the extra back.
                self.redis.eval(RELEASE_IF_HELD, 1, self._key(shard), self.member)
                del self._valid_until[shard]
            for shard in range(self.shards):
                if len(self._valid_until) >= fair:
                    break
                if shard in self._valid_until:
                    continue
                if self.redis.set(self._key(shard), self.member, nx=True, px=lease_ms):
                    self._valid_until[shard] = until
            if set(self._valid_until) != before:
                log.info(
                    "outbox shards held by %s: %s (%d relays)",
                    self.member,
                    sorted(self._valid_until),
                    live,
                )
        except RedisError as exc:
            # Held leases stay valid until their time runs out; none are renewed meanwhile.
            log.warning("outbox leases not refreshed: %s", exc)
            self._refresh_due = started + min(1.0, self.lease_s / 3)

    def release(self) -> None:
        """Give every held lease back (a clean stop: the others take over at once)."""
        with contextlib.suppress(RedisError):
            for shard in list(self._valid_until):
                self.redis.eval(RELEASE_IF_HELD, 1, self._key(shard), self.member)
            self.redis.zrem(self._members_key, self.member)
        self._valid_until = {}

    def wait_for_hint(self, timeout_s: float) -> bool:
        """Block until a worker's hint (passed on to the other holders) or ``timeout_s``."""
        own = self._own_hint_key(self.member)
        got = self.redis.blpop([own, self.hint_key], timeout=timeout_s)
        if got is None:
            return False
        key = got[0].decode() if isinstance(got[0], bytes) else str(got[0])
        if key == self.hint_key and len(self.held()) < self.shards:
            self._pass_on()
        return True

    def _pass_on(self) -> None:
        """Wake the relays that hold the shards this one does not (their own lists)."""
        keys = [self._key(s) for s in range(self.shards) if s not in self._valid_until]
        holders = {
            h.decode() if isinstance(h, bytes) else str(h)
            for h in self.redis.mget(keys)
            if h is not None
        } - {self.member}
        if not holders:
            return
        pipe = self.redis.pipeline(transaction=False)
        for holder in holders:
            pipe.lpush(self._own_hint_key(holder), 1)
            pipe.ltrim(self._own_hint_key(holder), 0, 0)
            pipe.expire(self._own_hint_key(holder), max(int(self.lease_s * 3), 1))
        pipe.execute()
