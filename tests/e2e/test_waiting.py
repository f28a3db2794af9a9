"""Runs that wait: durable timers, events, cancellation while waiting."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.conftest import BIN, Stack, on_both_brokers, on_both_stores, reconcile

pytestmark = pytest.mark.e2e


def history(stack: Stack, run_id: str) -> list[tuple[str, str | None]]:
    return [(h.kind, h.node_id) for h in stack.store.get_history(run_id)]


@on_both_stores
def test_sleep_waits_at_least_its_duration_and_the_run_is_waiting_meanwhile(stack: Stack) -> None:
    handle = stack.client.start("nap", {})
    stack.wait_for(lambda: handle.status() == "waiting", what="the run to be waiting")
    assert stack.node_status(handle.run_id, "nap") == "waiting"
    run = handle.result(timeout=30)

    assert run["status"] == "completed", run
    events = {
        k: h.at
        for h in stack.store.get_history(handle.run_id)
        for k in [h.kind]
        if h.node_id == "nap"
    }
    assert events["node.completed"] - events["node.waiting"] >= 2.0
    assert stack.effects("after") == 1


@on_both_stores
def test_a_one_day_sleep_fires_once_when_the_clock_moves_forward(stack: Stack) -> None:
    handle = stack.client.start("long-nap", {})
    stack.wait_for(lambda: handle.status() == "waiting", what="the run to be waiting")

    assert reconcile(stack)["timers"] == 0, "not due yet"
    assert reconcile(stack, FLOWBRIDGE_CLOCK_OFFSET_S=str(86400 + 5))["timers"] == 1
    run = handle.result(timeout=30)
    assert reconcile(stack, FLOWBRIDGE_CLOCK_OFFSET_S=str(2 * 86400))["timers"] == 0

    assert run["status"] == "completed", run
    assert run["nodes"]["nap"]["output"] == {}, "a sleep passes its input on (flowcraft)"
    [fired] = [h for h in stack.store.get_history(handle.run_id) if h.kind == "timer.fired"]
    created = dt.datetime.fromisoformat(run["created_at"]).timestamp()
    assert 86400 <= fired.data["due_at"] - created < 86400 + 60
    assert stack.effects("after") == 1
    assert [k for k, n in history(stack, handle.run_id)].count("timer.fired") == 1


@on_both_brokers
@on_both_stores
def test_wait_completes_with_the_signal_payload_sent_through_kafka(stack: Stack) -> None:
    handle = stack.client.start("approval", {})
    stack.wait_for(lambda: handle.status() == "waiting", what="the run to wait")
    out = subprocess.run(
        [
            str(BIN / "flowbridge"),
            "signal",
            handle.run_id,
            "approved",
            "--payload",
            '{"by": "ann"}',
        ],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(out.stdout)["event"] == "approved"
    run = handle.result(timeout=30)

    assert run["status"] == "completed", run
    assert run["nodes"]["approve"]["output"] == {"by": "ann"}
    assert stack.effects("after") == 1


@on_both_stores
def test_an_event_that_arrives_before_the_wait_is_kept_and_consumed(stack: Stack) -> None:
    handle = stack.client.start("late-wait", {})
    stack.wait_for(
        lambda: stack.node_status(handle.run_id, "work") == "running", what="work running"
    )
    handle.signal("go", {"early": True})
    run = handle.result(timeout=30)

    assert run["status"] == "completed", run
    assert run["nodes"]["approve"]["output"] == {"early": True}
    kinds = [k for k, _ in history(stack, handle.run_id)]
    assert kinds.index("event.stored") < kinds.index("event.consumed")
    assert "node.waiting" not in kinds, "the wait found its event and never parked"


def test_a_duplicate_event_id_is_ignored(stack: Stack) -> None:
    handle = stack.client.start("two-waits", {})
    stack.wait_for(lambda: stack.node_status(handle.run_id, "w1") == "waiting", what="w1 waiting")
    handle.signal("go", {"n": 1}, event_id="evt-1")
    stack.wait_for(lambda: stack.node_status(handle.run_id, "w2") == "waiting", what="w2 waiting")
    handle.signal("go", {"n": 1}, event_id="evt-1")  # the same event again: must not wake w2
    stack.wait_for(
        lambda: ("event.duplicate", None) in history(stack, handle.run_id), what="the duplicate"
    )
    assert stack.node_status(handle.run_id, "w2") == "waiting"
    handle.signal("go", {"n": 2}, event_id="evt-2")
    run = handle.result(timeout=30)

    assert run["status"] == "completed", run
    assert (run["nodes"]["w1"]["output"], run["nodes"]["w2"]["output"]) == ({"n": 1}, {"n": 2})


def test_wait_timeout_takes_the_timeout_action(stack: Stack) -> None:
    run = stack.client.start("wait-timeout", {}).result(timeout=30)

    assert run["status"] == "completed", run
    assert run["nodes"]["approve"]["output"] == {"timed_out": True, "event": "x"}
    assert run["nodes"]["on-timeout"]["status"] == "completed"
    assert run["nodes"]["on-event"]["status"] == "skipped"


@on_both_stores
def test_cancel_during_a_sleep_cancels_its_timer(stack: Stack) -> None:
    handle = stack.client.start("long-nap", {})
    stack.wait_for(lambda: handle.status() == "waiting", what="the run to be waiting")
    handle.cancel("no longer needed")
    run = handle.result(timeout=30)

    assert run["status"] == "cancelled"
    assert run["nodes"]["nap"]["status"] == "cancelled"
    assert reconcile(stack, FLOWBRIDGE_CLOCK_OFFSET_S=str(2 * 86400))["timers"] == 0
    assert stack.effects("after") == 0


def test_cancel_during_a_wait_then_a_late_event_goes_to_the_dlq(stack: Stack) -> None:
    handle = stack.client.start("approval", {})
    stack.wait_for(lambda: handle.status() == "waiting", what="the run to wait")
    handle.cancel()
    assert handle.result(timeout=30)["status"] == "cancelled"
    handle.signal("approved", {"too": "late"})
    handle_unknown = stack.client.handle("no-such-run")
    handle_unknown.signal("approved")

    dlq = stack.read_topic("dlq", 2)
    reasons = sorted(dict(r.headers)["flowbridge-error"].decode() for r in dlq)
    assert (
        reasons[0].startswith("run ")
        and "has finished: event 'approved' not delivered" in reasons[0]
    )
    assert "unknown run 'no-such-run'" in reasons[1]
    assert stack.effects("after") == 0


def test_killed_worker_task_is_restored_by_another_worker(
    stack_factory: Callable[..., Stack],
) -> None:
    s = stack_factory(FLOWBRIDGE_VISIBILITY_TIMEOUT_S="4", FLOWBRIDGE_UNACKED_RESTORE_S="1")
    s.start_bridge()
    s.start_worker("w1", concurrency=1)
    handle = s.client.start("gated", {})
    s.wait_for(lambda: s.effects("gate.started") == 1, what="gate running on w1")
    s.start_worker("w2", concurrency=1)
    # kill -9 the whole worker: its main process and the pool process running the node.
    import os
    import signal

    from tests.e2e.test_faults import _pid

    os.kill(_pid(s, "gate"), signal.SIGKILL)
    s.stop("w1", signal.SIGKILL)
    run = handle.result(timeout=60)

    assert run["status"] == "completed", run
    assert s.effects("gate.started") == 2, "the unacknowledged task came back to w2"
    assert (s.effects("gate"), s.effects("last")) == (1, 1)


@on_both_stores
def test_lost_celery_queues_are_re_emitted_by_the_reconciler_and_effects_apply_once(
    stack_factory: Callable[..., Stack],
) -> None:
    # The dead worker's leases lapse a second after its last renewal (they kept s2 otherwise).
    s = stack_factory(FLOWBRIDGE_STALLED_AFTER_S="1", FLOWBRIDGE_LEASE_S="1")
    s.start_bridge()
    s.start_worker(concurrency=5)  # every run is inside s2 when the worker dies
    handles = [s.client.start("sinks", {}) for _ in range(5)]
    s.wait_for(lambda: s.effects("s2.started") == 5, what="every run inside s2")
    s.stop("worker", signal_kill())  # the in-flight s2 tasks die with it
    for key in s.redis.scan_iter():  # and every queued or unacked Celery message is lost
        if b"effects:" not in key and b"pid:" not in key and b"sink" not in key:
            s.redis.delete(key)
    s.start_worker("worker-2")
    time.sleep(1.5)
    report = reconcile(s)
    # Every key went, the reconciler's queues mark too: its emptied-Redis sweep re-emits the
    # five runs (before the stall path looks at them, so none is counted as stalled).
    assert report["reconciled"] == 5, report

    runs = [h.result(timeout=60) for h in handles]
    assert {r["status"] for r in runs} == {"completed"}
    assert s.effects("s2.started") == 10, "node code ran again after the loss (at least once)"
    assert [s.effects(n) for n in ("s1", "s3", "s4")] == [5, 5, 5], "each sink effect applied once"
    assert s.redis.scard(f"{s.iso.redis_prefix}sink") == 15


def signal_kill() -> int:
    import signal

    return signal.SIGKILL


@on_both_stores
def test_two_reconcilers_at_once_re_emit_each_stalled_job_once(
    stack_factory: Callable[..., Stack],
) -> None:
    # The lapsed leases (1 s) make the runs stalled; the stall threshold is long, so a pass
    # that comes more than a second after the other's claims does not count a second stall.
    s = stack_factory(FLOWBRIDGE_STALLED_AFTER_S="60", FLOWBRIDGE_LEASE_S="1")
    s.start_bridge()
    s.start_worker(concurrency=8)
    handles = [s.client.start("sinks", {}) for _ in range(8)]
    s.wait_for(lambda: s.effects("s2.started") == 8, what="every run inside s2")
    s.stop("worker", signal_kill())
    for key in s.redis.scan_iter():
        if b"effects:" not in key and b"pid:" not in key and b"sink" not in key:
            s.redis.delete(key)
    time.sleep(1.5)
    procs = [
        subprocess.Popen(
            [str(BIN / "flowbridge"), "reconcile", "--once"],
            env=s.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    reports = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(r["reconciled"] for r in reports) == 8, reports
    # A later pass, still with no worker: each lapse was re-emitted already, not once per pass.
    assert reconcile(s)["reconciled"] == 0

    s.start_worker("worker-2")
    assert {h.result(timeout=60)["status"] for h in handles} == {"completed"}
    jobs = [json.loads(r.value) for r in s.read_topic("jobs", 8 + 8, timeout=10)]
    re_emitted = [(j["run_id"], j["node"]) for j in jobs if j.get("type") == "node"]
    assert len(re_emitted) == 8 and len(set(re_emitted)) == 8, "each stalled job re-emitted once"
    assert [s.effects(n) for n in ("s3", "s4")] == [8, 8]
