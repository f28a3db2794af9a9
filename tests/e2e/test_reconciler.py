"""The reconciler's locks and fences (real Redis, real SQLite) and its cost at scale."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from state.errors import StaleFenceError
from state.locks import RunLock
from state.records import Run
from state.sqlite import SQLiteStore
from tasks.reconciler import BATCH, reconcile_once
from tasks.runtime import Runtime
from tasks.settings import Settings
from tasks.worker import CeleryPort, app
from tests.conftest import Isolation, on_both_stores

ONE_NODE = {
    "id": "one",
    "metadata": {"version": "1"},
    "nodes": [{"id": "a", "uses": "echo"}],
    "edges": [],
}


def _run(run_id: str, status: str = "running", snapshot: dict | None = None) -> Run:  # type: ignore[type-arg]
    return Run(
        run_id=run_id,
        blueprint_id="one",
        version="1",
        status=status,
        input={},
        snapshot=ONE_NODE if snapshot is None else snapshot,
    )


@on_both_stores
def test_a_lock_holder_that_lost_its_lock_cannot_overwrite_the_new_holder(
    isolation: Isolation, tmp_path: Path
) -> None:
    store = SQLiteStore(tmp_path / "fence.db")
    store.migrate()
    store.create_run(_run("r"), start_nodes=["a"])
    client = redis.Redis.from_url(isolation.redis_db_url)
    lock = RunLock(client, store, prefix=isolation.redis_prefix, ttl_s=0.2)

    old_token = lock.acquire("r")
    old_fence = store.advance_fence("r")
    time.sleep(0.4)  # the holder is paused past the lock's TTL
    new_token = lock.acquire("r")
    assert old_token and new_token
    new_fence = store.advance_fence("r")
    assert new_fence == old_fence + 1
    assert lock.release("r", old_token) is False, "an expired owner cannot release the new lock"
    assert client.get(lock.key("r")) == new_token.encode()

    run = store.get_run("r")
    assert run is not None
    assert store.mark_reconciled("r", stalled_since=run.updated_at, fence=new_fence)
    with pytest.raises(StaleFenceError):
        store.cancel_run("r", reason="a stale holder", fence=old_fence)
    with pytest.raises(StaleFenceError):
        store.mark_reconciled("r", stalled_since=run.updated_at, fence=old_fence)
    assert store.get_run("r").status == "running"  # type: ignore[union-attr]
    client.close()


def _runtime(iso: Isolation, store: SQLiteStore, now: list[float]) -> Runtime:
    settings = Settings.from_env(
        {
            "REDIS_URL": iso.redis_db_url,
            "FLOWBRIDGE_REDIS_PREFIX": iso.redis_prefix,
            "FLOWBRIDGE_TOPIC_PREFIX": iso.prefix,
            "FLOWBRIDGE_STATE_URL": f"sqlite:///{store.path}",
            "FLOWBRIDGE_STALLED_AFTER_S": "300",
        }
    )
    port = CeleryPort(settings, store, app=app)
    # A Redis that kept its data: the mark a deployment's first pass sets (with the fake clock,
    # every node would look older than this Redis, as after it restarted empty).
    port.queues_emptied_ago()
    return Runtime(settings, store=store, port=port, clock=lambda: now[0])


def _stalled_store(path: Path, finished: int, now: list[float]) -> SQLiteStore:
    store = SQLiteStore(path, clock=lambda: now[0])
    store.migrate()
    for i in range(finished):
        now[0] += 0.01
        store.create_run(_run(f"done-{i}", status="completed", snapshot={}), start_nodes=[])
    for i in range(50):
        store.create_run(_run(f"stalled-{i}"), start_nodes=["a"])
        store.set_run_status(f"stalled-{i}", from_={"pending"}, to="running")
    now[0] += 3600  # an hour without progress
    return store


def _vm_steps(store: SQLiteStore, fn: object) -> int:
    """SQLite virtual-machine steps (in hundreds) spent by ``fn``: the work, whatever the timing."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    conn = store._conn()
    conn.set_progress_handler(tick, 100)
    try:
        fn()  # type: ignore[operator]
    finally:
        conn.set_progress_handler(None, 0)
    return steps[0]


def test_one_pass_with_100k_finished_runs_reads_only_the_stalled_buckets(
    isolation: Isolation, tmp_path: Path
) -> None:
    now_small, now_big = [1_000_000.0], [1_000_000.0]
    small = _stalled_store(tmp_path / "small.db", 0, now_small)
    big = _stalled_store(tmp_path / "big.db", 100_000, now_big)
    reports: dict[str, dict[str, int]] = {}

    def pass_over(name: str, store: SQLiteStore, now: list[float]) -> None:
        reports[name] = reconcile_once(_runtime(isolation, store, now))

    base = _vm_steps(small, lambda: pass_over("small", small, now_small))
    started = time.perf_counter()
    steps = _vm_steps(big, lambda: pass_over("big", big, now_big))
    elapsed = time.perf_counter() - started

    assert reports["big"] == {
        "scanned": 50,
        "stalled": 50,
        "reconciled": 50,
        "failed": 0,
        "timers": 0,
        "purged": 0,
        "lost": 0,
        "orphaned": 0,
        "redispatched": 0,
        "requeued": 0,
    }
    assert reports["small"] == reports["big"]
    # 100,000 finished runs add (almost) no work: a scan would add ~100,000 rows' worth.
    assert steps <= base * 1.2 + 50, (steps, base)
    assert len(big.pending_outbox(limit=1000)) == 50
    print(
        f"reconcile pass over 100,050 runs (50 stalled): {elapsed * 1000:.0f} ms, "
        f"{steps * 100} SQLite VM steps vs {base * 100} with no finished runs"
    )


def test_a_pass_purges_the_finished_runs_past_retention_in_batches(
    isolation: Isolation, tmp_path: Path
) -> None:
    now = [1_000_000.0]
    store = SQLiteStore(tmp_path / "purge.db", clock=lambda: now[0], retention_s=60)
    store.migrate()
    finished = BATCH * 2 + 10  # more than one batch: the pass goes on until none are left
    for i in range(finished):
        store.create_run(_run(f"done-{i}", status="completed", snapshot={}), start_nodes=[])
    store.create_run(_run("live"), start_nodes=["a"])
    now[0] += 30
    store.create_run(_run("recent", status="completed", snapshot={}), start_nodes=[])
    now[0] += 40  # the first runs are 70 s old, past the 60 s retention; "recent" 40 s
    report = reconcile_once(_runtime(isolation, store, now))
    assert report["purged"] == finished
    assert store.get_run("done-0") is None and store.get_history("done-0") == []
    assert store.get_run("recent") is not None, "not yet past retention"
    assert store.get_run("live") is not None, "a live run never expires"
    assert reconcile_once(_runtime(isolation, store, now))["purged"] == 0
