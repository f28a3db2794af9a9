"""A node task lost between its queue and a worker is sent again in seconds, and applied once.

kombu's Redis transport pops a message (BRPOP) before it records it as
unacknowledged; a worker main process killed in between loses it. One killed
with tasks prefetched leaves them unacknowledged, and Redis would return them
only after the visibility timeout. Before the dispatch check, both waited for
the reconciler's stall threshold (300 s) or the visibility timeout (600 s).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from state.history import HistoryKind
from tasks.constants import DISPATCH_SLACK_S, LIVE_STALE_S
from tests.conftest import Stack

pytestmark = pytest.mark.e2e

#: FLOWBRIDGE_DISPATCH_DEADLINE_S of these tests (beat runs the check this often too).
DEADLINE_S = 2.0


def _queue_key(stack: Stack, run_id: str) -> str:
    from tasks.worker.config import shard_queue

    return stack.iso.redis_prefix + shard_queue(run_id, stack.settings.shards)


def _unacked(stack: Stack) -> int:
    return int(stack.redis.hlen(stack.iso.redis_prefix + "unacked"))


def _redispatched(stack: Stack, run_id: str) -> list[tuple[str | None, str, str, float]]:
    return [
        (h.node_id, h.data["why"], h.data["how"], h.at)
        for h in stack.store.get_history(run_id)
        if h.kind == HistoryKind.NODE_REDISPATCHED
    ]


def test_a_node_task_popped_and_never_recorded_is_sent_again_after_the_deadline(
    stack_factory: Callable[..., Stack],
) -> None:
    s = stack_factory(FLOWBRIDGE_DISPATCH_DEADLINE_S=str(DEADLINE_S))
    s.start_bridge()
    handle = s.client.start("linear", {})
    # What a worker killed right after its BRPOP did: the message left the list, and kombu
    # never wrote it to the unacknowledged hash.
    popped = s.redis.brpop([_queue_key(s, handle.run_id)], timeout=30)
    assert popped is not None
    message = json.loads(popped[1])
    assert message["headers"]["task"] == "flowbridge.run_node"
    sent_at = float(message["headers"]["flowbridge-sent-at"])
    assert s.node_status(handle.run_id, "a") == "pending"
    assert s.redis.llen(_queue_key(s, handle.run_id)) == 0 and _unacked(s) == 0, (
        "the node's task is in no queue and no unacked set"
    )

    s.start_beat()
    s.start_worker()
    ready = time.time()
    run = handle.result(timeout=60)

    assert run["status"] == "completed", run
    events = _redispatched(s, handle.run_id)
    assert [e[:3] for e in events] == [("a", "lost", "redispatched")]
    # Found by the first check after the deadline once a worker runs checks (beat's interval).
    waited = events[0][3] - max(sent_at + DEADLINE_S, ready)
    print(f"sent again {events[0][3] - sent_at:.1f}s after it was sent ({waited:.1f}s late)")
    assert waited <= DEADLINE_S + DISPATCH_SLACK_S, waited
    assert [s.effects(n) for n in "abc"] == [1, 1, 1]


def test_a_node_task_a_dead_worker_left_unacknowledged_is_requeued_in_seconds(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    s = stack_factory(FLOWBRIDGE_DISPATCH_DEADLINE_S=str(DEADLINE_S))
    s.start_bridge()
    victim = s.start_worker("victim", FLOWBRIDGE_FAULT=f"after_receive@{tmp_path / 'received'}")
    handle = s.client.start("linear", {})
    s.wait_for(lambda: victim.poll() is not None, what="the worker killed after receiving")
    killed = time.time()
    assert victim.returncode == -signal.SIGKILL
    assert _unacked(s) == 1 and s.node_status(handle.run_id, "a") == "pending", (
        "a dead worker's unacknowledged task: Redis returns it after the visibility timeout"
    )

    s.start_beat()
    s.start_worker("survivor")
    run = handle.result(timeout=60)

    assert run["status"] == "completed", run
    events = _redispatched(s, handle.run_id)
    assert [e[:3] for e in events] == [("a", "orphaned", "requeued")]
    # The dead worker's record goes stale, then the next check moves the message back.
    waited = events[0][3] - killed
    print(f"requeued {waited:.1f}s after the kill")
    assert waited <= LIVE_STALE_S + DISPATCH_SLACK_S + DEADLINE_S + 2.0, waited
    assert [s.effects(n) for n in "abc"] == [1, 1, 1]
    s.wait_for(lambda: _unacked(s) == 0, what="nothing left unacknowledged")


#: Kills in the loop (``make chaos`` runs many more: FLOWBRIDGE_TEST_KILLS).
KILLS = int(os.environ.get("FLOWBRIDGE_TEST_KILLS", "6"))
#: The check's interval in the loop, and its deadline (above LIVE_STALE_S + DISPATCH_SLACK_S,
#: so a dead worker's tasks are found within it too).
LOOP_INTERVAL_S = 1.0
LOOP_DEADLINE_S = 4.0
#: What a loaded two-core machine adds to one hop (commit, publish, receive, claim).
SCHEDULING_S = 2.0


def _check_loop(stack: Stack, stop: threading.Event, reports: list[dict[str, int]]) -> None:
    """The dispatch check every LOOP_INTERVAL_S, as beat would run it on a surviving worker."""
    from tasks.reconciler import check_dispatch
    from tasks.runtime import Runtime, open_state
    from tasks.worker import CeleryPort

    settings = stack.settings
    store = open_state(settings)
    rt = Runtime(settings, store=store, port=CeleryPort(settings, store, app=stack.celery))
    try:
        while not stop.wait(LOOP_INTERVAL_S):
            reports.append(check_dispatch(rt))
    finally:
        store.close()


def _pending_spans(stack: Stack, run_id: str) -> dict[str, float]:
    """Seconds each node was ``pending`` before its first start, from the run's history."""
    since: dict[str, float] = {}
    spans: dict[str, float] = {}
    order = [f"k{i}" for i in range(1, 5)]
    for h in stack.store.get_history(run_id):
        if h.kind == "run.created":
            since[order[0]] = h.at
        elif h.kind == "node.completed" and h.node_id in order[:-1]:
            since[order[order.index(h.node_id) + 1]] = h.at
        elif h.kind == "node.started" and h.node_id not in spans and h.node_id in since:
            spans[str(h.node_id)] = h.at - since[str(h.node_id)]
    return spans


@pytest.mark.timeout(150 + 8 * KILLS)
def test_workers_killed_in_a_loop_leave_no_node_pending_past_the_deadline(
    stack_factory: Callable[..., Stack],
) -> None:
    # A worker is killed every second or so: one node may be under several of the kills, which
    # FLOWBRIDGE_MAX_DELIVERIES would take for a node that kills its worker (tested elsewhere).
    s = stack_factory(
        FLOWBRIDGE_DISPATCH_DEADLINE_S=str(LOOP_DEADLINE_S), FLOWBRIDGE_MAX_DELIVERIES="20"
    )
    s.start_bridge()
    names = ["w1", "w2"]
    for name in names:
        s.start_worker(name)
    stop = threading.Event()
    reports: list[dict[str, int]] = []
    checker = threading.Thread(target=_check_loop, args=(s, stop, reports), daemon=True)
    checker.start()
    handles: list[Any] = []
    kills: list[float] = []

    def produce() -> None:
        # A steady flow, so every kill finds tasks queued, prefetched and running.
        n = 0
        while not stop.is_set() and not done.is_set():
            handles.append(s.client.start("sink-chain", {"n": n}))
            n += 1
            time.sleep(0.1)

    done = threading.Event()
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        for i in range(KILLS):
            time.sleep(0.5)
            victim = s.procs[names[i % 2]]
            if i % 3 == 2:
                # A pool process: its main process requeues the task (task_reject_on_worker_lost).
                children = psutil.Process(victim.pid).children()
                if children:
                    os.kill(children[0].pid, signal.SIGKILL)
                continue
            # The main process: what it popped, prefetched or held is left to the check.
            kills.append(time.time())
            victim.kill()
            victim.wait(10)
            s.start_worker(names[i % 2])
        done.set()
        producer.join(10)
        runs = [h.result(timeout=120) for h in handles]
    finally:
        stop.set()
        checker.join(10)

    assert {r["status"] for r in runs} == {"completed"}, runs
    keys = 4 * len(handles)
    assert [s.effects(f"k{i}") for i in range(1, 5)] == [len(handles)] * 4
    assert s.redis.scard(s.iso.redis_prefix + "sink") == keys, "each effect applied once"
    spans: list[float] = []
    recovered: Counter[tuple[str, str, str]] = Counter()
    after_kill: list[float] = []
    for h in handles:
        history = s.store.get_history(h.run_id)
        kinds = [e.kind for e in history]
        assert kinds.count("node.completed") == 4 and kinds.count("run.completed") == 1
        spans += _pending_spans(s, h.run_id).values()
        for e in history:
            if e.kind == HistoryKind.NODE_REDISPATCHED:
                recovered[(e.data["why"], e.data["how"], str(e.data["status"]))] += 1
                if e.data["why"] == "orphaned":
                    after_kill.append(e.at - max(k for k in kills if k <= e.at))
    calls = [s.effects(f"k{i}.calls") for i in range(1, 5)]
    print(f"kills={KILLS} runs={len(handles)} recovered={dict(recovered)} node calls={calls}")
    if after_kill:
        print(f"orphans requeued at most {max(after_kill):.1f}s after the last kill")
    print(f"pending: max {max(spans):.2f}s, over 1s: {sorted(x for x in spans if x > 1)}")
    assert max(spans) <= LOOP_DEADLINE_S + LOOP_INTERVAL_S + SCHEDULING_S, sorted(spans)[-5:]
