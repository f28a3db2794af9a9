"""The bridge sends a poll's task messages as one batch and commits only once it is sent.

A private redis-server (not the session's: the failure test takes LPUSH, the
command that publishes a task message, away from its default user with an ACL) and the session's Kafka (tansu). No worker runs,
so the task messages stay in their shard queues where the test reads them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from flowbridge.dev import Service, start_redis
from tests.conftest import Stack

KEY = "one-partition"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Service]:
    with start_redis(log_dir=tmp_path) as service:
        yield service


@pytest.fixture
def bridge_only(stack_factory: Callable[..., Stack], private_redis: Service) -> Stack:
    s = stack_factory(REDIS_URL=private_redis.url)
    s.start_bridge()
    return s


def _queued_runs(s: Stack) -> dict[str, list[str]]:
    """Run ids of the node tasks in each shard queue, oldest first."""
    r = redis.Redis.from_url(s.env["REDIS_URL"])
    got: dict[str, list[str]] = {}
    for key in r.scan_iter(match=f"{s.iso.redis_prefix}flowbridge.shard.*"):
        if r.type(key) != b"list":
            continue
        # kombu LPUSHes and BRPOPs: the right end is the oldest.
        messages = [json.loads(m) for m in reversed(r.lrange(key, 0, -1))]
        runs = []
        for m in messages:
            body = json.loads(base64.b64decode(m["body"]))
            runs.append(body[1]["run_id"])
        got[key.decode()] = runs
    return got


def _committed(s: Stack) -> int | None:
    """The bridge group's committed offset of the test's partition (None: nothing yet)."""
    from bridge.settings import BridgeSettings

    topic = s.settings.topic("jobs")
    group = s.settings.topic_prefix + BridgeSettings.from_env(s.env).group_id
    c = KafkaConsumer(
        bootstrap_servers=s.env["KAFKA_BOOTSTRAP_SERVERS"],
        group_id=group,
        enable_auto_commit=False,
    )
    try:
        offsets = [c.committed(TopicPartition(topic, p)) for p in c.partitions_for_topic(topic)]
    finally:
        c.close(autocommit=False)
    found = [o for o in offsets if o is not None]
    return max(found) if found else None


def _start(s: Stack, run_id: str) -> None:
    s.produce(
        {"v": 1, "type": "start", "blueprint": "linear", "run_id": run_id, "input": {}}, key=KEY
    )


def test_a_poll_is_handed_off_in_order_and_then_committed(bridge_only: Stack) -> None:
    s = bridge_only
    ids = [f"batch-{i:02d}" for i in range(40)]
    for run_id in ids:
        _start(s, run_id)
    s.wait_for(
        lambda: sum(len(v) for v in _queued_runs(s).values()) >= len(ids),
        timeout=60,
        what="40 node tasks in Redis",
    )
    queued = _queued_runs(s)
    for runs in queued.values():
        assert runs == sorted(runs), "a shard queue holds its tasks out of record order"
    assert sorted(r for runs in queued.values() for r in runs) == ids
    s.wait_for(lambda: _committed(s) == len(ids), timeout=30, what="offset 40 committed")


def test_a_failed_send_commits_nothing_and_is_retried_in_order(
    bridge_only: Stack, private_redis: Service
) -> None:
    s = bridge_only
    _start(s, "a-warm")
    s.wait_for(lambda: _committed(s) == 1, timeout=60, what="the first record committed")
    admin = redis.Redis.from_url(private_redis.url)
    # Only the batch's LPUSHes fail (NOPERM): the records are handled, their send is refused.
    admin.execute_command("ACL", "SETUSER", "default", "-lpush")
    try:
        ids = [f"fail-{i:02d}" for i in range(10)]
        for run_id in ids:
            _start(s, run_id)
        log = s.iso.tmp_path / "bridge.log"
        s.wait_for(
            lambda: log.read_bytes().count(b"batch not sent") >= 2,
            timeout=60,
            what="the bridge to pause and retry the batch",
        )
        assert _committed(s) == 1, "offsets were committed for records whose tasks were not sent"
        assert sum(len(v) for v in _queued_runs(s).values()) == 1
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+lpush")
    s.wait_for(lambda: _committed(s) == 11, timeout=60, what="all records committed")
    queued = _queued_runs(s)
    assert sorted(r for runs in queued.values() for r in runs) == [
        "a-warm",
        *ids,
    ]  # "a-" sorts first, as it came
    for runs in queued.values():
        assert runs == sorted(runs)
