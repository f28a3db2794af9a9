"""Code workflows on the real stack: a bridge, Celery prefork workers, Redis, Kafka, the store.

The workflows are in ``tests/apps/e2e_workflows.py`` and kafka-workflow's
examples in ``examples/kafka_workflow.py``. Activities run at least once; the
tests count both their executions and the effect of an idempotent sink keyed
by run and step, which must happen exactly once whatever is killed.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Stack, on_both_brokers, on_both_stores, reconcile

pytestmark = pytest.mark.e2e

SAGA = "kw-trip-booking-saga"


def kinds(stack: Stack, run_id: str) -> list[str]:
    return [h.kind for h in stack.store.get_history(run_id)]


# --- kafka-workflow's protocol over Kafka -------------------------------------------------


def kw_send(
    stack: Stack, thread: str, value: str | dict[str, Any], workflow: str | None = None
) -> None:
    """A record on the test's ``workflow-resume`` topic, keyed by the thread (run) id."""
    data = value if isinstance(value, str) else json.dumps(value)
    headers = [] if workflow is None else [("flowbridge-workflow", workflow.encode())]
    stack.produce(
        data.encode(),
        key=thread,
        full_topic=stack.iso.prefix + "workflow-resume",
        headers=headers,
    )


def kw_read(
    stack: Stack, topic: str, thread: str, count: int, *, prefixed: bool = False
) -> list[Any]:
    """``count`` records of ``topic`` whose key is the thread's (or starts ``thread|``)."""
    full = stack.iso.prefix + topic if prefixed else topic

    def ours(rec: Any) -> bool:
        key = (rec.key or b"").decode()
        return key == thread or key.startswith(f"{thread}|")

    records = stack.read_topic(topic, count, full_topic=full, where=ours)
    assert len(records) == count, f"{topic}: {[(r.key, r.value) for r in records]}"
    return records


@on_both_brokers
def test_the_trip_booking_saga_runs_on_kafka_workflow_messages_alone(stack: Stack) -> None:
    """EngineTest.testTripBookingSaga (all resolved, timeout) through the bridge and workers."""
    ok, late = f"{stack.iso.prefix}thread1", f"{stack.iso.prefix}thread2"
    kw_send(stack, ok, "new:{}", workflow=SAGA)
    kw_send(stack, late, "new:{}", workflow=SAGA)
    refs: dict[str, dict[str, str]] = {}
    for thread in (ok, late):
        refs[thread] = {
            kind: kw_read(stack, f"saga-reserve-{kind}", thread, 1)[0].value.decode()
            for kind in ("car", "hotel", "flight")
        }
        (timer,) = kw_read(stack, "workflow-scheduler", thread, 1)
        assert timer.value == b"1000", "kafka-workflow's scheduler reads a plain number"
        refs[thread]["timer"] = json.loads(timer.key.decode().split("|", 1)[1])["ref"]
        assert dict(timer.headers)["flowbridge-id"], "emits carry a stable id for dedupe"

    for kind in ("flight", "hotel", "car"):
        kw_send(stack, ok, {"ref": refs[ok][kind]})
    kw_send(stack, late, {"ref": refs[late]["flight"]})
    kw_send(stack, late, {"ref": refs[late]["car"]})
    kw_send(stack, late, {"ref": refs[late]["timer"]})  # the scheduler's reply: time is up

    (result,) = kw_read(stack, "workflow-result", ok, 1, prefixed=True)
    assert json.loads(result.value) == {k: {"id": refs[ok][k]} for k in ("car", "hotel", "flight")}
    sched = kw_read(stack, "workflow-scheduler", ok, 2)
    assert [r.value for r in sched] == [b"1000", b"0"], "the timer is cancelled on success"

    (error,) = kw_read(stack, "workflow-error", late, 1, prefixed=True)
    assert error.value == b'"timeout"', "JSON.stringify(String(error)), byte for byte"
    for kind in ("car", "hotel", "flight"):
        (cancel,) = kw_read(stack, f"saga-cancel-{kind}", late, 1)
        assert cancel.value.decode() == refs[late][kind], f"{kind} cancelled exactly once"
    assert stack.client.handle(ok).result(timeout=30)["status"] == "completed"
    assert stack.client.handle(late).result(timeout=30)["status"] == "failed"


def test_bad_kafka_workflow_records_go_to_the_dlq_and_the_run_goes_on(stack: Stack) -> None:
    """What kafka-workflow drops silently (or crashes on) is dead-lettered with its reason."""
    thread = f"{stack.iso.prefix}t"
    kw_send(stack, thread, "new:{}", workflow=SAGA)
    car = kw_read(stack, "saga-reserve-car", thread, 1)[0].value.decode()
    bad = [
        (thread, "not json", None, "not JSON"),
        (thread, '{"ref": "' + car + '", "valeu": 1}', None, "unknown field(s) 'valeu'"),
        (f"{stack.iso.prefix}ghost", '{"ref": "1.1"}', None, "unknown run"),
        (f"{stack.iso.prefix}n", "new:{}", None, "names no workflow"),
        (f"{stack.iso.prefix}n", "new:{}", "kw-trip-bokking-saga", "kw-trip-bokking-saga"),
        (f"{stack.iso.prefix}n", "new:{oops", SAGA, "new: is not followed by JSON"),
    ]
    for key, value, workflow, _ in bad:
        kw_send(stack, key, value, workflow=workflow)
    kw_send(stack, thread, {"ref": car})  # after the bad ones: still applied

    dlq = stack.read_topic("dlq", len(bad))
    reasons = sorted(dict(r.headers)["flowbridge-error"].decode() for r in dlq)
    assert len(reasons) == len(bad), reasons
    for *_, reason in bad:
        assert any(reason in r for r in reasons), (reason, reasons)
    stack.wait_for(
        lambda: any(c.type == "ref" for c in _inputs(stack, thread)), what="the car's reply"
    )
    assert stack.procs["bridge"].poll() is None


def _queue(stack: Stack, run_id: str) -> str:
    """The Redis list of the run's Celery queue (kombu prefixes it with the test's prefix)."""
    from tasks.worker.config import shard_queue

    return stack.iso.redis_prefix + shard_queue(run_id, stack.settings.shards)


def _inputs(stack: Stack, run_id: str) -> list[Any]:
    from tasks.workflow.history import Activation

    state = stack.store.workflows.load(run_id)
    assert state is not None
    return [i for a in state.history for i in Activation.from_json(a).inputs]


# --- flowbridge's own jobs ---------------------------------------------------------------


@on_both_stores
def test_a_workflow_started_by_a_job_runs_its_activities_on_celery(stack: Stack) -> None:
    handle = stack.client.start("e2e-wf-steps", {"steps": 4, "topic": stack.iso.prefix + "out"})
    run = handle.result(timeout=60)

    assert run["status"] == "completed", run
    assert run["output"] == {"steps": ["s0", "s1", "s2", "s3"]}
    assert [stack.effects(f"wf.s{i}") for i in range(4)] == [1, 1, 1, 1]
    (record,) = stack.read_topic("", 1, full_topic=stack.iso.prefix + "out")
    assert json.loads(record.value) == {"run_id": handle.run_id, "steps": ["s0", "s1", "s2", "s3"]}
    assert kinds(stack, handle.run_id).count("run.completed") == 1
    assert list(run["nodes"]) == [f"{i}:e2e-wf-effect" for i in range(1, 5)], "durable steps listed"


@on_both_stores
def test_a_failed_activity_compensates_what_was_booked_in_reverse(stack: Stack) -> None:
    run = stack.client.start("e2e-wf-saga", {}).result(timeout=60)

    assert run["status"] == "failed", run
    assert "flight refused" in run["error"]
    assert stack.effects("wf.flight.calls") == 2, "the retry policy's two attempts"
    assert [stack.effects(s) for s in ("wf.car", "wf.hotel")] == [1, 1]
    assert [stack.effects(s) for s in ("wf.undo-car", "wf.undo-hotel")] == [1, 1]


def test_cancelling_a_workflow_runs_its_compensation(stack: Stack) -> None:
    stack.redis.delete(f"{stack.iso.redis_prefix}gate:held")
    handle = stack.client.start("e2e-wf-held", {})
    stack.wait_for(lambda: stack.effects("wf.held.started") == 1, what="the held step")
    handle.cancel("customer changed their mind")
    run = handle.result(timeout=60)

    assert run["status"] == "cancelled", run
    assert stack.effects("wf.after") == 0, "nothing after the cancel point ran"


def test_a_paused_workflow_lets_its_activity_finish_and_starts_nothing_until_resumed(
    stack: Stack,
) -> None:
    from bridge.errors import RunStateError

    stack.redis.delete(f"{stack.iso.redis_prefix}gate:held")
    handle = stack.client.start("e2e-wf-held", {})
    stack.wait_for(lambda: stack.effects("wf.held.started") == 1, what="the held step")
    handle.pause()
    stack.wait_for(lambda: handle.status() == "paused", what="the pause")
    stack.redis.set(f"{stack.iso.redis_prefix}gate:held", 1)  # the in-flight step finishes
    stack.wait_for(lambda: stack.effects("wf.held") == 1, what="the held step's effect")
    time.sleep(1.0)  # time enough for an activation to start the next step, were it allowed
    assert stack.effects("wf.after") == 0 and handle.status() == "paused"

    handle.resume()
    run = handle.result(timeout=60)
    assert run["status"] == "completed", run
    assert [stack.effects(s) for s in ("wf.before", "wf.held", "wf.after")] == [1, 1, 1]
    with pytest.raises(RunStateError, match="is a code workflow"):
        handle.retry()


# --- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "point", ["before_commit", "after_commit", "after_dispatch", "in_activity", "before_inline"]
)
def test_a_worker_killed_at_each_crash_point_loses_nothing_and_doubles_no_effect(
    stack_factory: Callable[..., Stack], point: str
) -> None:
    """FLOWBRIDGE_FAULT kills the pool process once there; the redelivery finishes the run."""
    stack = stack_factory()
    marker = stack.iso.tmp_path / f"fault-{point}"
    stack.start_bridge()
    stack.start_worker(FLOWBRIDGE_FAULT=f"{point}@{marker}")
    run = stack.client.start("e2e-wf-steps", {"steps": 3}).result(timeout=90)

    assert marker.exists(), f"the {point} fault fired"
    assert run["status"] == "completed", run
    assert [stack.effects(f"wf.s{i}") for i in range(3)] == [1, 1, 1], "each effect once"
    calls = sum(stack.effects(f"wf.s{i}.calls") for i in range(3))
    assert 3 <= calls <= 4, "at most the killed step's activity runs again"
    assert kinds(stack, run["run_id"]).count("run.completed") == 1


@pytest.mark.parametrize(("inline_nodes", "groups"), [("32", [5]), ("3", [3, 2]), ("1", [1] * 5)])
def test_sequential_activities_run_in_one_task_until_the_budget_hands_them_on(
    stack_factory: Callable[..., Stack], inline_nodes: str, groups: list[int]
) -> None:
    """Each activity's outcome activates the run in its task; the next one runs right there."""
    stack = stack_factory(FLOWBRIDGE_INLINE_NODES=inline_nodes)
    stack.start_bridge()
    stack.start_worker()
    run = stack.client.start("e2e-wf-tasks", {"steps": 5}).result(timeout=60)

    assert run["status"] == "completed", run
    raw = stack.redis.lrange(f"{stack.iso.redis_prefix}whoami:{run['run_id']}", 0, -1)
    pairs = [item.decode().split("=", 1) for item in raw]
    assert [step for step, _ in pairs] == [f"w{i}" for i in range(5)]
    tasks = [task for _, task in pairs]
    assert [len(list(g)) for _, g in itertools.groupby(tasks)] == groups, tasks
    assert [stack.effects(f"wf.w{i}") for i in range(5)] == [1] * 5


@on_both_stores
def test_a_pool_process_killed_mid_activity_is_redelivered_and_completes(stack: Stack) -> None:
    handle = stack.client.start("e2e-wf-held", {})
    stack.wait_for(lambda: stack.effects("wf.held.started") == 1, what="the held step")
    pid = int(stack.redis.get(f"{stack.iso.redis_prefix}pid:held") or 0)
    assert pid > 1
    os.kill(pid, signal.SIGKILL)
    stack.redis.set(f"{stack.iso.redis_prefix}gate:held", 1)
    run = handle.result(timeout=90)

    assert run["status"] == "completed", run
    assert stack.effects("wf.held.started") == 2, "the activity ran again after the kill"
    assert [stack.effects(s) for s in ("wf.before", "wf.held", "wf.after")] == [1, 1, 1]


def test_redis_flushed_mid_run_the_reconciler_sends_the_lost_work_again(stack: Stack) -> None:
    """The queued activity is gone with Redis's data; the reconciler finds the stall."""
    stack.stop("worker")
    handle = stack.client.start("e2e-wf-steps", {"steps": 2})
    stack.wait_for(
        lambda: stack.redis.llen(_queue(stack, handle.run_id)) > 0,
        what="the run's activation queued",
    )
    stack.redis.flushdb()  # the queued task messages with it
    stack.start_worker()
    time.sleep(0.2)  # past FLOWBRIDGE_STALLED_AFTER_S below
    assert reconcile(stack, FLOWBRIDGE_STALLED_AFTER_S="0.1")["reconciled"] >= 1
    run = handle.result(timeout=60)

    assert run["status"] == "completed", run
    assert [stack.effects("wf.s0"), stack.effects("wf.s1")] == [1, 1]


@on_both_stores
def test_a_three_day_sleep_survives_a_worker_restart_and_fires_once(stack: Stack) -> None:
    handle = stack.client.start("e2e-wf-sleepy", {"days": 3})
    stack.wait_for(lambda: handle.status() == "waiting", what="the run to sleep")
    stack.stop("worker")
    stack.start_worker("worker-2")

    assert reconcile(stack)["timers"] == 0, "not due yet"
    three_days = str(3 * 86400 + 5)
    assert reconcile(stack, FLOWBRIDGE_CLOCK_OFFSET_S=three_days)["timers"] == 1
    assert reconcile(stack, FLOWBRIDGE_CLOCK_OFFSET_S=three_days)["timers"] == 0, "only once"
    run = handle.result(timeout=60)

    assert run["status"] == "completed", run
    assert [stack.effects("wf.before"), stack.effects("wf.after")] == [1, 1]


def test_a_deploy_that_changed_the_code_blocks_the_run_until_it_is_fixed(
    stack: Stack,
) -> None:
    """Non-determinism: the run stops with a report (not a failure); the fixed deploy resumes it."""
    handle = stack.client.start("e2e-wf-waits", {})
    stack.wait_for(lambda: handle.status() == "waiting", what="the run to wait for 'go'")
    stack.stop("worker")
    stack.start_worker("worker-renamed", E2E_WF_VARIANT="renamed")
    handle.signal("go", {"ok": 1})
    stack.wait_for(
        lambda: (
            (s := stack.store.workflows.load(handle.run_id)) is not None and s.blocked is not None
        ),
        what="the run to be blocked",
    )
    blocked = handle.run()
    assert blocked is not None
    assert blocked["status"] == "running", "blocked is not failed: nothing is lost"
    assert "e2e-wf-effect" in blocked["blocked"]["error"], blocked["blocked"]
    assert blocked["blocked"]["activation"] == 1, "replay diverged in the first activation"
    assert stack.effects("wf.second") == 0

    stack.stop("worker-renamed")
    stack.start_worker("worker-fixed")
    time.sleep(0.2)
    assert reconcile(stack, FLOWBRIDGE_STALLED_AFTER_S="0.1")["reconciled"] >= 1
    run = handle.result(timeout=60)

    assert run["status"] == "completed", run
    assert run["output"] == {"event": {"ok": 1}}
    assert [stack.effects("wf.first"), stack.effects("wf.second")] == [1, 1]
