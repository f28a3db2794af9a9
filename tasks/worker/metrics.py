"""Prometheus metrics of workers and the bridge: the engine's ``tasks.metrics.Metrics``.

Under a prefork pool each child counts in files under ``PROMETHEUS_MULTIPROC_DIR``
(``prometheus_client``'s multiprocess mode) and the worker's main process serves
them all on ``FLOWBRIDGE_METRICS_PORT``; the bridge (one process) serves its own.
``docs/operating.md`` lists every metric and what it is for.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from typing import Any

__all__ = ["PrometheusMetrics", "prepare_multiprocess", "serve_metrics"]

log = logging.getLogger("flowbridge.metrics")

#: Buckets of node attempt durations, seconds (a no-op node to a long external call).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def prepare_multiprocess() -> None:
    """Before a prefork pool forks: count in files when no ``PROMETHEUS_MULTIPROC_DIR`` is set.

    ``prometheus_client`` picks its value class when first imported, so this must
    run before it is (it warns when that is too late).
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    import sys

    if "prometheus_client" in sys.modules:
        log.warning(
            "prometheus_client was imported before the worker started: set "
            "PROMETHEUS_MULTIPROC_DIR, or the pool's metrics are lost"
        )
        return
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="flowbridge-metrics-")


def serve_metrics(port: int, *, multiprocess: bool) -> None:
    """Serve ``/metrics`` on ``port`` (all interfaces) from a daemon thread."""
    from prometheus_client import CollectorRegistry, start_http_server

    if multiprocess:
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)
        start_http_server(port, registry=registry)
    else:
        start_http_server(port)
    log.info("metrics on :%d/metrics", port)


class PrometheusMetrics:
    """``tasks.metrics.Metrics`` counted with ``prometheus_client`` (labels: ids only)."""

    def __init__(self) -> None:
        """Create the metrics in the default registry (once per process)."""
        from prometheus_client import Counter, Histogram

        self.runs_started = Counter("flowbridge_runs_started", "Runs created.", ["blueprint"])
        self.runs_finished = Counter(
            "flowbridge_runs_finished",
            "Runs that reached a terminal status.",
            ["blueprint", "status"],
        )
        self.runs_retried = Counter(
            "flowbridge_runs_retried", "Finished runs retried (a new attempt).", ["blueprint"]
        )
        self.node_attempts = Counter(
            "flowbridge_node_attempts",
            "Node attempts by how they ended (completed, retry, failed, waiting, ...).",
            ["blueprint", "node", "outcome"],
        )
        self.node_seconds = Histogram(
            "flowbridge_node_attempt_seconds",
            "How long node attempts ran.",
            ["blueprint", "node"],
            buckets=DURATION_BUCKETS,
        )
        self.joins_fired = Counter(
            "flowbridge_joins_fired", "Joins whose conditional fire applied.", ["blueprint", "join"]
        )
        self.reconciler_passes = Counter("flowbridge_reconciler_passes", "Reconciler passes.")
        self.reconciler_reemits = Counter(
            "flowbridge_reconciler_reconciled_runs",
            "Stalled runs the reconciler re-emitted or settled.",
        )
        self.reconciler_timers = Counter(
            "flowbridge_reconciler_timers_fired", "Due timers the reconciler fired."
        )
        self.reconciler_failures = Counter(
            "flowbridge_reconciler_failures", "Runs or timers a reconciler pass failed on."
        )
        self.tasks_recovered = Counter(
            "flowbridge_dispatch_recovered_tasks",
            "Node tasks the dispatch check sent again (lost) or put back in their queue "
            "(a dead worker's).",
            ["how"],
        )

    def run_started(self, blueprint: str) -> None:
        """Count a run created."""
        self.runs_started.labels(blueprint).inc()

    def run_finished(self, blueprint: str, status: str) -> None:
        """Count a run finished."""
        self.runs_finished.labels(blueprint, status).inc()

    def run_retried(self, blueprint: str) -> None:
        """Count a run retried."""
        self.runs_retried.labels(blueprint).inc()

    def node_attempt(self, blueprint: str, node: str, outcome: str, duration_s: float) -> None:
        """Count an attempt and its duration."""
        self.node_attempts.labels(blueprint, node, outcome).inc()
        self.node_seconds.labels(blueprint, node).observe(duration_s)

    def join_fired(self, blueprint: str, join: str) -> None:
        """Count a join fired."""
        self.joins_fired.labels(blueprint, join).inc()

    def reconciler_pass(self, report: Mapping[str, int]) -> None:
        """Count a pass and what it did."""
        self.reconciler_passes.inc()
        self.reconciler_reemits.inc(report.get("reconciled", 0))
        self.reconciler_timers.inc(report.get("timers", 0))
        self.reconciler_failures.inc(report.get("failed", 0))

    def dispatch_check(self, report: Mapping[str, int]) -> None:
        """Count what a dispatch check recovered."""
        self.tasks_recovered.labels(how="redispatched").inc(report.get("redispatched", 0))
        self.tasks_recovered.labels(how="requeued").inc(report.get("requeued", 0))


_installed: dict[str, Any] = {}


def process_metrics() -> PrometheusMetrics:
    """This process's metrics (created once: the registry refuses a second set of names)."""
    if "metrics" not in _installed:
        _installed["metrics"] = PrometheusMetrics()
    metrics: PrometheusMetrics = _installed["metrics"]
    return metrics
