"""``/metrics`` of the bridge and of a prefork worker: the counters move during a run."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable

import pytest

from flowbridge.dev import free_port
from tests.conftest import Stack

pytestmark = pytest.mark.e2e


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_counters_move_on_the_bridge_and_on_a_prefork_worker(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory()
    bridge_port, worker_port = free_port(), free_port()
    stack.start_bridge(FLOWBRIDGE_METRICS_PORT=str(bridge_port))
    (stack.iso.tmp_path / "prom").mkdir()
    stack.start_worker(
        concurrency=2,
        FLOWBRIDGE_METRICS_PORT=str(worker_port),
        PROMETHEUS_MULTIPROC_DIR=str(stack.iso.tmp_path / "prom"),
    )
    before = scrape(worker_port)
    assert value(before, "flowbridge_node_attempts_total") == 0

    for _ in range(3):
        assert stack.client.start("linear", {}).result(timeout=30)["status"] == "completed"
    stack.redis.set(f"{stack.iso.redis_prefix}broken:fix", 1)
    assert stack.client.start("fixme", {}).result(timeout=30)["status"] == "failed"
    stack.produce(b"not json", key="bad")
    stack.client.start("retry", {}).result(timeout=30)

    bridge, worker = scrape(bridge_port), scrape(worker_port)
    assert value(bridge, "flowbridge_runs_started_total", blueprint="linear") == 3
    assert (
        value(worker, "flowbridge_runs_finished_total", blueprint="linear", status="completed") == 3
    )
    assert value(worker, "flowbridge_runs_finished_total", blueprint="fixme", status="failed") == 1
    assert (
        value(worker, "flowbridge_node_attempts_total", blueprint="linear", outcome="completed")
        == 9
    )
    assert value(worker, "flowbridge_node_attempts_total", blueprint="retry", outcome="retry") == 2
    assert value(worker, "flowbridge_node_attempts_total", node="fix", outcome="failed") == 1
    assert value(worker, "flowbridge_node_attempt_seconds_count", blueprint="linear", node="b") == 3
    stack.wait_for(
        lambda: value(scrape(bridge_port), "flowbridge_dlq_records_total") == 1, what="DLQ count"
    )
    bridge = scrape(bridge_port)
    assert value(bridge, "flowbridge_dlq_records_total", reason="value is not JSON") == 1
    assert value(bridge, "flowbridge_bridge_records_total", outcome="dispatched") >= 5
    stack.wait_for(lambda: "flowbridge_consumer_lag{" in scrape(bridge_port), what="lag gauges")
    lag = scrape(bridge_port)
    jobs = stack.settings.topic("jobs")
    assert value(lag, "flowbridge_consumer_lag", topic=jobs, partition="0") == 0, "all consumed"
    assert value(bridge, "flowbridge_outbox_published_total") >= 10  # run.started/completed
    assert "flowbridge_outbox_backlog" in bridge
