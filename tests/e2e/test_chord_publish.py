"""A chord header goes to Redis through one producer, pipelined, without result subscriptions.

``CeleryPort.dispatch_chord`` is called against a private redis-server (its command
counters are the test's alone), with no worker consuming. Redis's own
``total_reads_processed`` follows how the pipeline's bytes arrive (about 2 KB a
read on a busy machine), not the round trips, so the test counts commands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from flowbridge.dev import Service, start_redis
from tasks.port import NodeTask
from tests.conftest import Stack

WIDTH = 1000


@pytest.fixture
def publishing_only() -> Iterator[None]:
    """As in a worker's pool process (and the bridge): no result subscription per task sent."""
    from celery._state import _set_task_join_will_block

    from tasks.worker.port import publish_only

    publish_only()
    try:
        yield
    finally:
        _set_task_join_will_block(False)  # the flag is process-wide: other tests wait on results


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Service]:
    with start_redis(log_dir=tmp_path) as service:
        yield service


def test_a_header_of_1000_is_one_lpush_each_and_nothing_else_per_task(
    stack_factory: Callable[..., Stack], private_redis: Service, publishing_only: None
) -> None:
    from tasks.worker.port import CeleryPort

    s = stack_factory(REDIS_URL=private_redis.url)
    port = CeleryPort(s.settings, s.store, app=s.celery)
    heads = [NodeTask(run_id="chord-run", node_id=f"b{i:04d}", branch=True) for i in range(WIDTH)]
    port.dispatch_chord(heads[:2], join_id="warm-up")  # connections and queue declarations
    admin = redis.Redis.from_url(private_redis.url)
    admin.config_resetstat()
    port.dispatch_chord(heads, join_id="join")
    stats = admin.info("commandstats")
    assert stats["cmdstat_lpush"]["calls"] == WIDTH
    # Sent as a process that never waits on results: no SUBSCRIBE per task message.
    assert "cmdstat_subscribe" not in stats
    queued = sum(
        int(admin.llen(key))
        for key in admin.scan_iter(match=f"{s.iso.redis_prefix}flowbridge.shard.*")
        if admin.type(key) == b"list"
    )
    assert queued == WIDTH + 2
