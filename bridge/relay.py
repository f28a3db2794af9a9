"""The outbox relay: publishes rows that workers committed with their state changes.

At least once: a row is deleted only after Kafka confirmed it (``acks=all``),
so a crash in between publishes it again, with the same ``flowbridge-id``
header for consumers to dedupe on. Woken by a Redis hint after each commit;
it also sweeps every ``FLOWBRIDGE_OUTBOX_SWEEP_S`` in case a hint was lost.

With several bridges each relays only the outbox shards it holds a lease on
(``bridge.leases``), so a row is published by one of them, not by every one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kafka import KafkaProducer
from redis.exceptions import RedisError

from bridge.leases import ShardLeases
from bridge.metrics import BridgeMetrics
from bridge.settings import BridgeSettings, KafkaSettings
from state.protocol import StateStore

__all__ = ["OutboxRelay"]

log = logging.getLogger("flowbridge.outbox")

BATCH = 500


class OutboxRelay:
    """Publishes outbox rows to Kafka from a background thread."""

    def __init__(
        self,
        *,
        store: StateStore,
        wait_hint: Callable[[float], bool],
        kafka: KafkaSettings,
        settings: BridgeSettings,
        metrics: BridgeMetrics | None = None,
        leases: ShardLeases | None = None,
    ) -> None:
        """Relay ``store``'s outbox; ``wait_hint(timeout_s)`` blocks until a worker's hint.

        With ``leases``, only the shards they hold (else every shard: one relay alone).
        """
        self.leases = leases
        self.metrics = metrics
        self.store = store
        self.wait_hint = wait_hint
        self.kafka = kafka
        self.settings = settings
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="outbox-relay", daemon=True)
        self._producer: KafkaProducer | None = None

    def start(self) -> None:
        """Start relaying."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what is pending, then stop."""
        self._stop.set()
        self._thread.join(timeout)

    def _producer_(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(acks="all", linger_ms=2, **self.kafka.client_config())
        return self._producer

    def relay_once(self) -> int:
        """Publish one batch of pending rows; returns how many."""
        shards = None if self.leases is None else self.leases.held()
        if shards is not None and not shards:
            return 0
        rows = self.store.pending_outbox(limit=BATCH, shards=shards)
        if self.metrics is not None:
            self.metrics.outbox(pending=len(rows), published=0)
        if not rows:
            return 0
        producer = self._producer_()
        futures = [
            producer.send(
                r.topic,
                key=None if r.key is None else r.key.encode(),
                value=r.wire_value(),
                headers=[("flowbridge-id", r.id.encode())]
                + [(k, v.encode()) for k, v in r.headers],
            )
            for r in rows
        ]
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)
        self.store.delete_outbox([r.id for r in rows])
        self.published += len(rows)
        if self.metrics is not None:
            self.metrics.outbox(pending=0, published=len(rows))
        return len(rows)

    def _wait_for_hint(self) -> None:
        wait = self.settings.outbox_sweep_s
        if self.leases is not None:
            # Wake in time to renew the leases even when the sweep is rarer than that.
            wait = min(wait, self.leases.lease_s / 4)
        try:
            self.wait_hint(wait)
        except RedisError:
            self._stop.wait(wait)

    def _loop(self) -> None:
        while True:
            stopping = self._stop.is_set()
            try:
                n = self.relay_once()
            except Exception:
                log.exception("outbox relay failed; retrying")
                n = 0
                self._stop.wait(self.settings.outbox_sweep_s)
            if stopping and n < BATCH:
                break
            if n == 0:
                self._wait_for_hint()
        if self.leases is not None:
            self.leases.release()
        if self._producer is not None:
            self._producer.close(timeout=5)
