"""The bridge's own Prometheus metrics: records handled, the DLQ, consumer lag, the outbox.

The engine's metrics (runs started, ...) come from ``tasks.worker.metrics``; the
bridge serves both on ``FLOWBRIDGE_METRICS_PORT``. ``docs/operating.md`` lists them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["BridgeMetrics", "reason_class"]

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+")


def reason_class(reason: str) -> str:
    """A DLQ reason without its particulars (names, numbers, details): a label, not a message.

    ``unknown blueprint 'nope'; registered: ...`` becomes ``unknown blueprint '…'``;
    ``value is not JSON: Expecting value ...`` becomes ``value is not JSON``.
    """
    text = _QUOTED.sub("'…'", reason.split("\n", 1)[0])
    for detail in (": ", "; ", " ("):
        text = text.split(detail, 1)[0]
    return _NUMBER.sub("N", text)[:60]


class BridgeMetrics:
    """Counters and gauges of one bridge process."""

    def __init__(self) -> None:
        """Create them in the default registry (once per process)."""
        from prometheus_client import Counter, Gauge

        self.records = Counter(
            "flowbridge_bridge_records", "Kafka records the bridge handled.", ["topic", "outcome"]
        )
        self.dlq = Counter(
            "flowbridge_dlq_records", "Records written to the DLQ, by reason.", ["reason"]
        )
        self.lag = Gauge(
            "flowbridge_consumer_lag",
            "Records behind the end of each assigned partition.",
            ["topic", "partition"],
            multiprocess_mode="livesum",
        )
        self.outbox_backlog = Gauge(
            "flowbridge_outbox_backlog",
            "Outbox rows waiting to be published at the last look (capped at one batch).",
            multiprocess_mode="livesum",
        )
        self.outbox_published = Counter(
            "flowbridge_outbox_published", "Outbox rows the relay published."
        )

    def handled(self, topic: str, outcome: str) -> None:
        """Count a record dispatched or dead-lettered."""
        self.records.labels(topic, outcome).inc()

    def dead_lettered(self, reason: str) -> None:
        """Count a record written to the DLQ."""
        self.dlq.labels(reason_class(reason)).inc()

    def consumer_lag(self, lags: Mapping[Any, int]) -> None:
        """Set the lag of each assigned partition (``TopicPartition`` -> records)."""
        for tp, lag in lags.items():
            self.lag.labels(tp.topic, str(tp.partition)).set(lag)

    def outbox(self, *, pending: int, published: int) -> None:
        """Record one relay round."""
        self.outbox_backlog.set(pending)
        if published:
            self.outbox_published.inc(published)
