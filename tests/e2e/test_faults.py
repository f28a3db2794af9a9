"""Failures are normal: a killed worker, a killed or stopped bridge and a Redis outage lose no run
and apply no state transition twice. Node code may run again after a crash (at least once)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from flowbridge.dev import start_redis
from tests.conftest import Stack, on_both_brokers, on_both_stores

pytestmark = pytest.mark.e2e


def _pid(stack: Stack, node: str) -> int:
    """The pid of the pool process running ``node`` (the node writes it just after starting)."""
    key = f"{stack.iso.redis_prefix}pid:{node}"
    stack.wait_for(lambda: stack.redis.get(key) is not None, what=f"{node}'s pid")
    pid = int(stack.redis.get(key) or 0)
    assert pid > 1, "never signal pid 0 or 1 (a process group, or init)"
    return pid


@on_both_brokers
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_bridge_stopped_mid_stream_loses_no_run_and_duplicates_none(stack: Stack, sig: int) -> None:
    ids = [f"burst-{i}" for i in range(40)]
    for run_id in ids:
        stack.produce(
            {"v": 1, "type": "start", "run_id": run_id, "blueprint": "linear", "input": {}},
            key=run_id,
        )
    stack.wait_for(lambda: stack.store.get_run(ids[0]) is not None, what="the first run")
    code = stack.stop("bridge", sig)
    if sig == signal.SIGTERM:
        assert code == 0, "SIGTERM drains, commits and exits cleanly"
    stack.start_bridge("bridge-2")

    runs = [stack.client.handle(r).result(timeout=60) for r in ids]
    assert {r["status"] for r in runs} == {"completed"}
    assert [stack.effects(n) for n in "abc"] == [40, 40, 40], "each node's code ran once per run"
    for run_id in ids:
        kinds = [h.kind for h in stack.store.get_history(run_id)]
        assert kinds.count("run.created") == 1
        assert kinds.count("node.completed") == 3
        assert kinds.count("run.completed") == 1


@on_both_stores
def test_worker_process_killed_mid_node_is_redelivered_and_completes(stack: Stack) -> None:
    handle = stack.client.start("gated", {})
    stack.wait_for(lambda: stack.effects("gate.started") == 1, what="gate started")
    os.kill(_pid(stack, "gate"), signal.SIGKILL)
    run = handle.result(timeout=60)

    assert run["status"] == "completed", run
    assert stack.effects("gate.started") == 2, "node code runs again after a crash (at least once)"
    assert stack.effects("gate") == 1
    assert stack.effects("last") == 1, "the successor is dispatched once"
    gate = stack.store.get_node(handle.run_id, "gate")
    assert gate is not None and (gate.attempts, gate.deliveries) == (1, 2)


def test_node_that_kills_its_worker_fails_after_max_deliveries(stack: Stack) -> None:
    run = stack.client.start("crasher", {}).result(timeout=90)

    assert run["status"] == "failed"
    assert "delivered 3 times without finishing" in run["error"]
    assert stack.effects("crash.started") == 3
    assert stack.procs["worker"].poll() is None, "the worker survives its crashing children"


@on_both_brokers
def test_redis_outage_pauses_the_bridge_and_loses_nothing(
    stack_factory: Callable[..., Stack], tmp_path: os.PathLike[str]
) -> None:
    redis = start_redis(log_dir=tmp_path, appendonly=True)
    try:
        stack = stack_factory(REDIS_URL=redis.url)
        stack.start_bridge()
        stack.start_worker()
        assert stack.client.start("linear", {}).result(timeout=30)["status"] == "completed"

        redis.stop()
        handles = [stack.client.start("linear", {"during": i}) for i in range(3)]
        time.sleep(3)
        assert stack.procs["bridge"].poll() is None, "the bridge waits for Redis instead of dying"
        redis.start()

        runs = [h.result(timeout=60) for h in handles]
        assert {r["status"] for r in runs} == {"completed"}
        stack.redis.connection_pool.reset()
        assert [stack.effects(n) for n in "abc"] == [4, 4, 4]
    finally:
        redis.stop()
