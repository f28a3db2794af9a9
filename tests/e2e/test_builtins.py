"""flowcraft's built-ins end to end: Kafka -> bridge -> Celery workers -> the state store.

Subflows (a child run of its own, its end delivered to the parent through the
outbox and the events topic; a redelivered child completion; cancelling the
parent), batches (windows of chords; a worker process killed mid-batch; 10,000
items kept in pages) and loops (one iteration per pass; a worker killed
mid-pass), on SQLite and on a real Cassandra.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.conftest import Stack, on_both_stores

pytestmark = pytest.mark.e2e


def child_of(stack: Stack, run_id: str) -> str:
    [started] = [h for h in stack.store.get_history(run_id) if h.kind == "subflow.started"]
    return str(started.data["child"])


def kill_victim(stack: Stack) -> None:
    """Kill the pool process that recorded itself as the victim (SIGKILL, as the OOM killer)."""
    key = f"{stack.iso.redis_prefix}pid:victim"
    stack.wait_for(lambda: stack.redis.get(key) is not None, what="the victim's pid")
    pid = int(stack.redis.get(key) or 0)
    assert pid > 1, "never signal pid 0 or 1"
    os.kill(pid, signal.SIGKILL)


@on_both_stores
def test_a_subflow_runs_as_a_child_run_and_completes_its_parent(stack: Stack) -> None:
    run = stack.client.start("sub-parent", {"order": 7}).result(timeout=60)

    assert run["status"] == "completed", run
    child_id = child_of(stack, run["run_id"])
    child = stack.client.get_run(child_id)
    assert child is not None and child["status"] == "completed"
    assert child["parent"]["run_id"] == run["run_id"] and child["parent"]["node_id"] == "call"
    assert child["input"] == run["nodes"]["start"]["output"], "without inputs: the node's input"
    work = child["nodes"]["work"]["output"]
    assert run["nodes"]["call"]["output"] == {"child_result": work}
    assert run["nodes"]["after"]["output"]["mapped"] == work
    assert [stack.effects(n) for n in ("child-work", "parent-after")] == [1, 1]


@on_both_stores
def test_a_redelivered_child_completion_wakes_the_parent_once(stack: Stack) -> None:
    handle = stack.client.start("sub-parent", {})
    run = handle.result(timeout=60)
    assert run["status"] == "completed", run
    child_id = child_of(stack, handle.run_id)
    notice = {
        "v": 1,
        "type": "event",
        "run_id": handle.run_id,
        "name": f"subflow:{child_id}",
        "event_id": f"child-ended:{child_id}",
        "payload": {"run_id": child_id, "status": "completed"},
    }
    for _ in range(2):  # the outbox relay publishes at least once: the same event again
        stack.produce(notice, key=handle.run_id, topic="events")

    def kinds() -> list[str]:
        return [h.kind for h in stack.store.get_history(handle.run_id)]

    stack.wait_for(lambda: kinds().count("event.duplicate") == 2, what="both copies deduped")
    assert stack.effects("parent-after") == 1
    assert kinds().count("event.matched") == 1 and kinds().count("run.completed") == 1


def test_a_child_completion_delivered_twice_around_its_parent_s_wake_applies_once(
    stack: Stack,
) -> None:
    handle = stack.client.start("sub-parent-waiting", {})
    stack.wait_for(lambda: handle.status() == "waiting", what="the parent waiting on its child")
    child_id = child_of(stack, handle.run_id)
    stack.wait_for(
        lambda: (stack.client.get_run(child_id) or {}).get("status") == "waiting",
        what="the child waiting",
    )
    stack.client.resume(child_id, "hold", output={"ok": True})
    run = handle.result(timeout=60)
    notice = {
        "v": 1,
        "type": "event",
        "run_id": handle.run_id,
        "name": f"subflow:{child_id}",
        "event_id": f"child-ended:{child_id}",
        "payload": {"run_id": child_id, "status": "completed"},
    }
    stack.produce(notice, key=handle.run_id, topic="events")
    assert run["status"] == "completed", run
    assert run["nodes"]["call"]["output"] == {"ok": True}, "the child's terminal's output"

    def kinds() -> list[str]:
        return [h.kind for h in stack.store.get_history(handle.run_id)]

    stack.wait_for(lambda: "event.duplicate" in kinds(), what="the copy deduped")
    assert kinds().count("event.matched") == 1
    assert kinds().count("node.completed") == 2


def test_cancelling_the_parent_cancels_its_child(stack: Stack) -> None:
    handle = stack.client.start("sub-parent-waiting", {})
    stack.wait_for(lambda: handle.status() == "waiting", what="the parent waiting on its child")
    child_id = child_of(stack, handle.run_id)
    handle.cancel("enough")
    assert handle.result(timeout=30)["status"] == "cancelled"
    child = stack.client.handle(child_id).result(timeout=30)
    assert child["status"] == "cancelled"
    assert "its parent run" in child["error"]


@on_both_stores
def test_a_batch_runs_each_item_once_in_windows_and_gathers_in_order(stack: Stack) -> None:
    run = stack.client.start("batch", {"count": 37}).result(timeout=90)

    assert run["status"] == "completed", run
    total = run["nodes"]["total"]["output"]
    assert total == {"count": 37, "sum": 2 * sum(range(37)), "head": [0, 2, 4], "ordered": True}
    ref = run["nodes"]["gather"]["output"]
    assert ref["length"] == 37 and "$flowbridge.batch" in ref, "the gather's output is paged"
    assert run["context"]["doubled"] == ref
    assert stack.effects("double.calls") == 37
    items = stack.store.get_nodes(run["run_id"], [f"fan[{i}]" for i in range(37)])
    assert {r.status for r in items.values()} == {"completed"} and len(items) == 37


@on_both_stores
def test_a_worker_killed_mid_batch_loses_no_item_and_commits_each_once(stack: Stack) -> None:
    handle = stack.client.start("batch-slow", {"count": 12, "victim": 5, "item_s": 0.3})
    kill_victim(stack)
    run = handle.result(timeout=120)

    assert run["status"] == "completed", run
    assert run["nodes"]["total"]["output"]["sum"] == 2 * sum(range(12))
    assert stack.effects("item5.started") == 2, "the killed item ran again (at least once)"
    victim = stack.store.get_node(handle.run_id, "fan[5]")
    assert victim is not None and (victim.attempts, victim.deliveries) == (1, 2)
    kinds = [(h.kind, h.node_id) for h in stack.store.get_history(handle.run_id)]
    assert kinds.count(("node.completed", "fan[5]")) == 1
    assert kinds.count(("join.fired", "gather")) == 1
    assert stack.effects("total") == 1


@pytest.mark.timeout(600)
def test_ten_thousand_items_never_make_one_big_row_or_message(stack: Stack) -> None:
    started = time.monotonic()
    run = stack.client.start("batch-wide", {"count": 10_000}).result(timeout=600)
    elapsed = time.monotonic() - started

    assert run["status"] == "completed", run
    assert run["nodes"]["total"]["output"]["count"] == 10_000
    assert run["nodes"]["total"]["output"]["ordered"] is True
    import sqlite3

    db = stack.iso.state_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT items FROM batch_pages WHERE run_id = ?", (run["run_id"],))
        sizes = [len(json.loads(r[0])) for r in rows]
        biggest = conn.execute(
            "SELECT MAX(LENGTH(output)) FROM nodes WHERE run_id = ?", (run["run_id"],)
        ).fetchone()[0]
    assert len(sizes) == 200 and max(sizes) == 100, "10,000 items and outputs in pages of 100"
    assert biggest < 200_000, "the prepare node's list is the largest row (the user's output)"
    done = [
        json.loads(r.value)
        for r in stack.read_topic("runs", 2)
        if r.key == run["run_id"].encode() and b"run.completed" in r.value
    ]
    assert done and len(json.dumps(done[0])) < 2_000, "run.completed carries a reference"
    print(f"10,000-item batch: {elapsed:.1f}s from start message to completed run")


@on_both_stores
def test_a_loop_runs_one_iteration_per_pass_and_survives_a_killed_worker(stack: Stack) -> None:
    handle = stack.client.start("loop", {"n": 0, "limit": 5, "victim": 2, "victim_s": 3})
    kill_victim(stack)
    run = handle.result(timeout=120)

    assert run["status"] == "completed", run
    assert run["context"]["n"] == 5
    passes = run["iterations"]["bump"]
    assert [p["iteration"] for p in passes] == [0, 1, 2, 3, 4]
    assert [p["output"] for p in passes] == [1, 2, 3, 4, 5]
    assert [stack.effects(f"bump.started.{i}") for i in range(5)] == [1, 1, 2, 1, 1]
    assert run["nodes"]["done"]["output"] == 5, "the node after the loop gets its last pass"
