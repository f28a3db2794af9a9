"""Several bridges in one consumer group: rebalances while partitions are paused, and one
outbox relay per shard (each ``run.*`` record published once, a dead bridge's shards taken over).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest

from flowbridge.dev import start_redis
from tests.conftest import Stack, on_both_brokers

pytestmark = pytest.mark.e2e


def _log(stack: Stack, name: str) -> str:
    path = stack.iso.tmp_path / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _starts(stack: Stack, tag: str, n: int) -> list[str]:
    ids = [f"{tag}-{i}" for i in range(n)]
    for run_id in ids:
        stack.produce(
            {"v": 1, "type": "start", "run_id": run_id, "blueprint": "linear", "input": {}},
            key=run_id,
        )
    return ids


@on_both_brokers
def test_a_bridge_with_paused_partitions_survives_a_rebalance(
    stack_factory: Callable[..., Stack], tmp_path: os.PathLike[str]
) -> None:
    redis = start_redis(log_dir=tmp_path, appendonly=True)
    try:
        stack = stack_factory(REDIS_URL=redis.url)
        stack.start_bridge("bridge-1")
        stack.start_worker()
        assert stack.client.start("linear", {}).result(timeout=30)["status"] == "completed"

        redis.stop()
        ids = _starts(stack, "paused", 12)
        # Both partitions of the jobs topic pause at their first record (Redis is down).
        jobs = re.escape(stack.settings.topic("jobs"))

        def paused() -> set[str]:
            return set(re.findall(rf"pausing .*{jobs}'?, partition=(\d)", _log(stack, "bridge-1")))

        stack.wait_for(lambda: len(paused()) == 2, what="both partitions paused")
        stack.start_bridge("bridge-2")

        def settled() -> bool:
            # Before the fix the first bridge stopped consuming here (KeyError from resume()).
            first = _log(stack, "bridge-1")
            if stack.procs["bridge-1"].poll() is not None or "bridge stopping" in first:
                return True
            return "partitions revoked" in first and "partitions assigned" in _log(
                stack, "bridge-2"
            )

        stack.wait_for(settled, timeout=60, what="the rebalance")
        # Longer than the pause: the first bridge retries its paused partitions meanwhile.
        time.sleep(4)
        assert stack.procs["bridge-1"].poll() is None, "a rebalance never stops a paused bridge"
        assert "bridge stopping" not in _log(stack, "bridge-1"), _log(stack, "bridge-1")[-3000:]
        assert stack.procs["bridge-2"].poll() is None
        redis.start()

        runs = [stack.client.handle(r).result(timeout=90) for r in ids]
        assert {r["status"] for r in runs} == {"completed"}
        stack.redis.connection_pool.reset()
        assert [stack.effects(n) for n in "abc"] == [13, 13, 13], "each node ran once per run"
        for run_id in ids:
            kinds = [h.kind for h in stack.store.get_history(run_id)]
            assert (kinds.count("run.created"), kinds.count("run.completed")) == (1, 1)
        assert "Traceback" not in _log(stack, "bridge-1") + _log(stack, "bridge-2")
    finally:
        redis.stop()


def _runs_records(stack: Stack, ids: list[str], seconds: float) -> Counter[tuple[str, str]]:
    """Every ``run.*`` record of ``ids`` on the runs topic, read for ``seconds``."""
    wanted = set(ids)
    records = stack.read_topic(
        "runs",
        10**9,
        timeout=seconds,
        where=lambda r: r.key is not None and r.key.decode() in wanted,
    )
    return Counter((r.key.decode(), json.loads(r.value)["type"]) for r in records)


def _held(stack: Stack, name: str) -> list[int]:
    """The outbox shards bridge ``name`` said it held last."""
    found = re.findall(r"outbox shards held by \S+: \[([\d, ]*)\]", _log(stack, name))
    return [int(s) for s in found[-1].split(",") if s.strip()] if found else []


@on_both_brokers
def test_two_bridges_publish_each_run_record_once_and_take_over_a_dead_ones_shards(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(FLOWBRIDGE_OUTBOX_LEASE_S="3")
    stack.start_bridge("bridge-1")
    stack.start_bridge("bridge-2")
    stack.start_worker(concurrency=4)
    stack.wait_for(
        lambda: len(_held(stack, "bridge-1")) == 4 and len(_held(stack, "bridge-2")) == 4,
        timeout=30,
        what="the outbox shards split between the bridges",
    )
    assert not set(_held(stack, "bridge-1")) & set(_held(stack, "bridge-2"))

    ids = _starts(stack, "pair", 80)
    runs = [stack.client.handle(r).result(timeout=90) for r in ids]
    assert {r["status"] for r in runs} == {"completed"}
    counts = _runs_records(stack, ids, seconds=6)
    assert {run_id for run_id, kind in counts if kind == "run.completed"} == set(ids)
    twice = {k: n for k, n in counts.items() if n > 1}
    assert not twice, f"run records published more than once: {twice}"

    stack.stop("bridge-1", signal.SIGKILL)
    stack.wait_for(
        lambda: len(_held(stack, "bridge-2")) == 8,
        timeout=30,
        what="the survivor taking over every shard",
    )
    later = _starts(stack, "after", 20)
    runs = [stack.client.handle(r).result(timeout=90) for r in later]
    assert {r["status"] for r in runs} == {"completed"}
    counts = _runs_records(stack, later, seconds=6)
    assert {run_id for run_id, kind in counts if kind == "run.completed"} == set(later), (
        "a dead bridge's shards are relayed by the survivor"
    )
    assert stack.procs["bridge-2"].poll() is None
