"""Run locks: a Redis lock with an owner token, paired with the store's fence.

The Redis lock avoids duplicate work; it is not what makes writes safe. A
holder paused past the lock's TTL may still believe it holds the lock, so each
acquisition also advances the run's fence in the state store (a conditional
write, which survives Redis restarts, unlike a Redis counter), and writes made
under the lock carry that fence: the store rejects a fence older than the
run's (``StaleFenceError``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from state.protocol import StateStore

if TYPE_CHECKING:
    import redis

__all__ = ["RELEASE_IF_HELD", "RunLock"]

#: Delete the key only if it still holds our token (never release someone else's lock).
RELEASE_IF_HELD = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RunLock:
    """Per-run mutual exclusion for run-level operations (cancel, reconcile)."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        store: StateStore,
        *,
        prefix: str = "",
        ttl_s: float = 30.0,
    ) -> None:
        """Lock keys are ``{prefix}flowbridge:lock:run:<run_id>``, held ``ttl_s`` at most."""
        self.client = client
        self.store = store
        self.prefix = prefix
        self.ttl_s = ttl_s

    def key(self, run_id: str) -> str:
        """The Redis key of one run's lock."""
        return f"{self.prefix}flowbridge:lock:run:{run_id}"

    def acquire(self, run_id: str, *, wait_s: float = 0.0) -> str | None:
        """Take the lock (waiting up to ``wait_s``); returns the owner token, or None."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_s
        while True:
            if self.client.set(self.key(run_id), token, nx=True, px=int(self.ttl_s * 1000)):
                return token
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def expires_in(self, run_id: str) -> float:
        """Seconds until the run's lock expires by itself (0.0 when nobody holds it)."""
        ms = int(self.client.pttl(self.key(run_id)))
        return max(ms, 0) / 1000.0

    def release(self, run_id: str, token: str) -> bool:
        """Release the lock if ``token`` still owns it."""
        return bool(self.client.eval(RELEASE_IF_HELD, 1, self.key(run_id), token))  # type: ignore[no-untyped-call]

    @contextmanager
    def hold(
        self, run_id: str, *, wait_s: float = 0.0, fenced: bool = True
    ) -> Iterator[int | None]:
        """Hold the run's lock and yield a fresh fence, or yield None if another holder has it.

        ``fenced=False`` advances no fence (one write transaction less) and yields 0: for a
        holder whose writes are conditional on their own (a code workflow's activation).
        """
        token = self.acquire(run_id, wait_s=wait_s)
        if token is None:
            yield None
            return
        try:
            yield self.store.advance_fence(run_id) if fenced else 0
        finally:
            self.release(run_id, token)
