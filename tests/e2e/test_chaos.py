"""Chaos: fan-out/fan-in runs while workers, the bridge and Redis die, on SQLite and Cassandra.

A worker's main process is kill -9'd every WORKER_KILL_S and replaced, the bridge is kill -9'd
twice (and started again), and Redis is kill -9'd once and started again empty: every queued
Celery message, unacknowledged task, sent record, lock and lease is gone. The dispatch check
and the reconciler (run by beat, as in production) must bring every run to its end. Effects
are counted by the ledger (tests/apps/ledger.py), a SQLite file Redis's loss does not touch.

``make chaos`` runs FLOWBRIDGE_CHAOS_RUNS=1000; ``make test`` the short form.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from flowbridge.dev import Service, start_redis
from tests.conftest import Stack, on_both_stores, reconcile
from tests.e2e.fleet import (
    Submitter,
    env_int,
    ledger_env,
    load_averages,
    outcome,
    print_table,
    wait_finished,
)

pytestmark = pytest.mark.e2e

RUNS = env_int("FLOWBRIDGE_CHAOS_RUNS", 60)
#: Runs started per second (the kills need a steady flow to land on).
RATE = float(os.environ.get("FLOWBRIDGE_CHAOS_RATE", "2"))
#: How long the runs have to finish once the last was started.
WAIT_S = env_int("FLOWBRIDGE_CHAOS_WAIT_S", 90)
WORKER_KILL_S = 3.0
#: When, as a share of the runs started, the bridge and Redis die.
EVENTS = [(0.25, "bridge"), (0.5, "redis"), (0.75, "bridge")]
WORKERS = ["w1", "w2"]
#: Worker kills at least, however slowly a loaded machine restarts the bridge (the kills go on
#: into the tail of the runs until there were this many).
MIN_WORKER_KILLS = 3


def _kill_redis(redis: Service) -> None:
    """kill -9 Redis and start it again on its port, empty (no AOF, no snapshot)."""
    assert redis.proc is not None and redis.proc.pid > 1
    os.kill(redis.proc.pid, signal.SIGKILL)
    redis.proc.wait(10)
    redis.stop()
    time.sleep(1.0)
    redis.start()


def test_a_node_task_lost_with_an_emptied_redis_is_re_emitted_by_the_next_reconciler_pass(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    redis = start_redis(log_dir=tmp_path)
    try:
        s = stack_factory(REDIS_URL=redis.url, **ledger_env(tmp_path))
        s.start_bridge()
        assert reconcile(s)["reconciled"] == 0, "the first pass sets the mark; nothing to do"
        handle = s.client.start("ledger-fan", {})
        from tasks.worker.config import shard_queue

        queue = s.iso.redis_prefix + shard_queue(handle.run_id, s.settings.shards)
        s.wait_for(lambda: s.redis.llen(queue) == 1, what="the first node's task queued")
        _kill_redis(redis)
        s.start_worker()
        time.sleep(2)
        assert s.node_status(handle.run_id, "start") == "pending", "its task went with Redis"
        assert reconcile(s)["reconciled"] == 1, "the first pass after the restart re-emits it"
        assert handle.result(timeout=60)["status"] == "completed"
        assert reconcile(s)["reconciled"] == 0, "once per restart"
    finally:
        redis.stop()


@on_both_stores
@pytest.mark.timeout(240 + int(RUNS / RATE) + WAIT_S)
def test_runs_survive_killed_workers_bridges_and_an_emptied_redis(
    stack_factory: Callable[..., Stack], tmp_path: Path, state_backend: str
) -> None:
    redis = start_redis(log_dir=tmp_path)
    try:
        s = stack_factory(
            REDIS_URL=redis.url,
            **ledger_env(
                tmp_path,
                FLOWBRIDGE_DISPATCH_DEADLINE_S="4",
                # A node may be under several kills; a poison node is tested elsewhere.
                FLOWBRIDGE_MAX_DELIVERIES="20",
                FLOWBRIDGE_RECONCILE_INTERVAL_S="5",
                # The backstop in reach of the test: a join's chord body (flowbridge.fire_join)
                # held by a killed worker is not among the tasks the dispatch check tracks, so
                # such a run waits for the stall path (docs/capacity.md, the chaos figures).
                FLOWBRIDGE_STALLED_AFTER_S=os.environ.get("FLOWBRIDGE_CHAOS_STALLED_S", "30"),
            ),
        )
        s.start_bridge()
        for name in WORKERS:
            s.start_worker(name)
        s.start_beat()
        kills: Counter[str] = Counter()
        submitter = Submitter(s, f"chaos-{state_backend}", RUNS, RATE)
        began = time.monotonic()
        submitter.start()
        events = list(EVENTS)
        next_kill = time.monotonic() + WORKER_KILL_S

        def flowing() -> bool:
            return not submitter.done.is_set() or kills["worker"] < MIN_WORKER_KILLS

        while events or flowing():
            if events and submitter.fraction >= events[0][0]:
                _, what = events.pop(0)
                if what == "redis":
                    _kill_redis(redis)
                else:
                    s.stop("bridge", signal.SIGKILL)
                    s.start_bridge()
                kills[what] += 1
            elif time.monotonic() >= next_kill and flowing():
                name = WORKERS[kills["worker"] % len(WORKERS)]
                s.stop(name, signal.SIGKILL)
                s.start_worker(name)
                kills["worker"] += 1
                next_kill = time.monotonic() + WORKER_KILL_S
            time.sleep(0.05)
        submitter.join(30)
        assert submitter.error is None, submitter.error
        status = wait_finished(s, submitter.ids, timeout=WAIT_S)
        elapsed = time.monotonic() - began
        result = outcome(s, submitter.ids, status, tmp_path / "ledger.db")
        result.extra = {
            "kills (worker/bridge/redis)": f"{kills['worker']}/{kills['bridge']}/{kills['redis']}",
            "s": f"{elapsed:.0f}",
            "slowest run (s)": f"{max(result.durations, default=0):.0f}",
            "runs over 20 s": result.slower_than(20),
        }
        print_table(f"chaos on {state_backend} ({load_averages()})", [(state_backend, result)])
        print(f"not completed: {Counter(status[r] for r in result.lost)}")

        assert (kills["bridge"], kills["redis"]) == (2, 1)
        assert not result.lost, f"{len(result.lost)} lost, e.g. {result.lost[:5]}"
        assert not result.double, f"applied twice: {result.double[:5]}"
        assert result.completed == RUNS
    finally:
        redis.stop()
