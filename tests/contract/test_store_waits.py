"""The ``StateStore`` contract for waiting runs: waits, timers, the event inbox, fences, stalls.

Same suite as ``test_store_contract.py`` (the ``store`` fixture runs each test on
SQLite, in memory and on Scylla/Cassandra). The global reads
(``due_timers``, ``pending_outbox``) are filtered to the test's own runs, because
on Scylla the keyspace is shared by the session.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from state.constants import (
    NODE_CANCELLED,
    NODE_COMPLETED,
    NODE_PENDING,
    NODE_RUNNING,
    NODE_WAITING,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_RUNNING,
    RUN_WAITING,
)
from state.errors import StaleFenceError
from state.protocol import StateStore
from state.records import DueTimer, NodeCompletion, Wakeup
from tests.contract.helpers import (
    PROCESSES,
    THREADS,
    StoreSpec,
    in_parallel,
    kinds,
    msg,
    new_id,
    open_in_process,
    started,
)


def running(store: StateStore, *nodes: str) -> str:
    """A running run whose ``nodes`` are all claimed (``running``)."""
    run_id = started(store, *nodes)
    for n in nodes:
        assert store.begin_attempt(run_id, n, 0, 1) is not None
    return run_id


def status_of(store: StateStore, run_id: str, node_id: str | None = None) -> str:
    if node_id is None:
        run = store.get_run(run_id)
        assert run is not None
        return run.status
    node = store.get_node(run_id, node_id)
    assert node is not None
    return node.status


def due_ours(store: StateStore, now: float, runs: set[str]) -> list[DueTimer]:
    return [t for t in store.due_timers(now=now, limit=10_000) if t.run_id in runs]


def outbox_ids(store: StateStore) -> set[str]:
    return {m.id for m in store.pending_outbox(limit=10_000)}


# --- events ---------------------------------------------------------------------------------
def test_suspend_then_deliver_wakes_the_node(store: StateStore) -> None:
    run_id = running(store, "w")
    assert store.suspend_node(run_id, "w", event="approve") is None
    assert status_of(store, run_id, "w") == NODE_WAITING
    assert status_of(store, run_id) == RUN_WAITING
    assert store.get_wakeup(run_id, "w") is None

    d = store.deliver_event(run_id, "approve", event_id="e1", payload={"ok": 1})
    assert (d.outcome, d.node_id, d.iteration) == ("matched", "w", 0)
    assert status_of(store, run_id, "w") == NODE_PENDING
    assert status_of(store, run_id) == RUN_RUNNING
    assert store.get_wakeup(run_id, "w") == Wakeup(
        kind="event", event_name="approve", event_id="e1", payload={"ok": 1}
    )
    history = kinds(store, run_id)
    assert history.count("event.matched") == 1 and "node.waiting" in history
    # The woken node runs again and completes with what woke it.
    assert store.begin_attempt(run_id, "w", 0, 1) is not None
    assert store.commit_node(NodeCompletion(run_id=run_id, node_id="w", output=1)).applied


def test_event_before_suspend_is_consumed_by_suspend(store: StateStore) -> None:
    run_id = running(store, "a")
    d = store.deliver_event(run_id, "approve", event_id="early", payload=[1, 2])
    assert d.outcome == "stored" and d.node_id is None
    assert status_of(store, run_id) == RUN_RUNNING
    assert "event.stored" in kinds(store, run_id)

    wake = store.suspend_node(run_id, "a", event="approve", due_at=time.time() + 3600)
    assert wake == Wakeup(kind="event", event_name="approve", event_id="early", payload=[1, 2])
    assert status_of(store, run_id, "a") == NODE_RUNNING  # it goes on at once
    assert status_of(store, run_id) == RUN_RUNNING
    assert store.get_wakeup(run_id, "a") == wake
    # Consumed: a second node waiting for the same name parks.
    store.commit_node(NodeCompletion(run_id=run_id, node_id="a", pending=("b",)))
    store.begin_attempt(run_id, "b", 0, 1)
    assert store.suspend_node(run_id, "b", event="approve") is None
    assert status_of(store, run_id, "b") == NODE_WAITING
    # Its timer was never registered: the event came first.
    assert due_ours(store, time.time() + 7200, {run_id}) == []


def test_events_are_consumed_oldest_first(store: StateStore) -> None:
    run_id = running(store, "a", "b")
    store.deliver_event(run_id, "x", event_id="first", payload=1)
    time.sleep(0.01)
    store.deliver_event(run_id, "x", event_id="second", payload=2)
    one = store.suspend_node(run_id, "a", event="x")
    two = store.suspend_node(run_id, "b", event="x")
    assert one is not None and two is not None
    assert (one.event_id, two.event_id) == ("first", "second")


def test_duplicate_event_id_is_ignored(store: StateStore) -> None:
    run_id = running(store, "a", "b")
    store.suspend_node(run_id, "a", event="go")
    assert store.deliver_event(run_id, "go", event_id="e1", payload=1).outcome == "matched"
    store.suspend_node(run_id, "b", event="go")
    # The same event again (a redelivered Kafka message) wakes nothing.
    again = store.deliver_event(run_id, "go", event_id="e1", payload=1)
    assert again.outcome == "duplicate" and again.node_id is None
    assert status_of(store, run_id, "b") == NODE_WAITING
    wake = store.get_wakeup(run_id, "a")
    assert wake is not None and wake.event_id == "e1"
    assert kinds(store, run_id).count("event.matched") == 1
    assert "event.duplicate" in kinds(store, run_id)


def test_duplicate_of_a_stored_event_is_stored_once(store: StateStore) -> None:
    run_id = running(store, "a", "b")
    assert store.deliver_event(run_id, "go", event_id="e1").outcome == "stored"
    assert store.deliver_event(run_id, "go", event_id="e1").outcome == "duplicate"
    assert store.suspend_node(run_id, "a", event="go") is not None
    assert store.suspend_node(run_id, "b", event="go") is None
    assert status_of(store, run_id, "b") == NODE_WAITING


def test_concurrent_duplicates_wake_one_node_once(store: StateStore) -> None:
    run_id = running(store, "a", "b")
    store.suspend_node(run_id, "a", event="go")
    time.sleep(0.01)
    store.suspend_node(run_id, "b", event="go")
    results = in_parallel(
        THREADS, lambda i: store.deliver_event(run_id, "go", event_id="same", payload=i)
    )
    outcomes = [d.outcome for d in results]
    assert outcomes.count("matched") == 1
    assert set(outcomes) <= {"matched", "duplicate", "stored"}
    assert [d.node_id for d in results if d.outcome == "matched"] == ["a"]
    assert status_of(store, run_id, "b") == NODE_WAITING
    assert kinds(store, run_id).count("event.matched") == 1


def test_event_to_an_unknown_or_finished_run(store: StateStore) -> None:
    assert store.deliver_event(new_id(), "go", event_id="e1").outcome == "no-run"
    run_id = running(store, "a")
    store.finish_run(run_id, status=RUN_COMPLETED, output=1)
    d = store.deliver_event(run_id, "go", event_id="e1", payload={"late": True})
    assert d.outcome == "finished" and d.node_id is None
    # Recorded, never silently dropped.
    assert kinds(store, run_id)[-1] == "event.unmatched"


def test_two_events_wake_two_waiters_in_order(store: StateStore) -> None:
    run_id = running(store, "a", "b", "c")
    store.suspend_node(run_id, "a", event="x")
    time.sleep(0.01)
    store.suspend_node(run_id, "b", event="x")
    first = store.deliver_event(run_id, "x", event_id="e1", payload=1)
    second = store.deliver_event(run_id, "x", event_id="e2", payload=2)
    assert (first.outcome, first.node_id) == ("matched", "a")
    assert (second.outcome, second.node_id) == ("matched", "b")
    wa, wb = store.get_wakeup(run_id, "a"), store.get_wakeup(run_id, "b")
    assert wa is not None and wb is not None
    assert (wa.payload, wb.payload) == (1, 2)
    # A third finds nobody waiting: kept for the next node that waits.
    assert store.deliver_event(run_id, "x", event_id="e3", payload=3).outcome == "stored"
    wc = store.suspend_node(run_id, "c", event="x")
    assert wc is not None and wc.payload == 3


def test_the_second_event_is_stored_when_one_node_waits(store: StateStore) -> None:
    run_id = running(store, "a", "b")
    store.suspend_node(run_id, "a", event="x")
    assert store.deliver_event(run_id, "x", event_id="e1").outcome == "matched"
    assert store.deliver_event(run_id, "x", event_id="e2", payload="kept").outcome == "stored"
    wake = store.suspend_node(run_id, "b", event="x")
    assert wake is not None and (wake.event_id, wake.payload) == ("e2", "kept")


def test_an_event_of_another_name_wakes_nobody(store: StateStore) -> None:
    run_id = running(store, "a")
    store.suspend_node(run_id, "a", event="x")
    assert store.deliver_event(run_id, "y", event_id="e1").outcome == "stored"
    assert status_of(store, run_id, "a") == NODE_WAITING


def test_suspend_racing_a_delivery_never_loses_the_event(store: StateStore) -> None:
    # Whichever comes first, the node ends up with the event: consumed at once by the
    # suspend (still running) or woken by the delivery (pending); never parked beside it.
    for _ in range(10):
        run_id = running(store, "a")

        def act(i: int, run_id: str = run_id) -> Any:
            if i == 0:
                return store.suspend_node(run_id, "a", event="go")
            return store.deliver_event(run_id, "go", event_id="e", payload="p")

        woke, delivery = in_parallel(2, act)
        if woke is not None:
            assert delivery.outcome == "stored" and woke.payload == "p"
            assert status_of(store, run_id, "a") == NODE_RUNNING
        else:
            assert delivery.outcome == "matched"
            assert status_of(store, run_id, "a") == NODE_PENDING
        wake = store.get_wakeup(run_id, "a")
        assert wake is not None and wake.event_id == "e"


def test_suspend_of_a_node_that_is_not_running_does_nothing(store: StateStore) -> None:
    run_id = started(store, "a")  # pending, not claimed
    assert store.suspend_node(run_id, "a", event="x", due_at=time.time()) is None
    assert status_of(store, run_id, "a") == NODE_PENDING
    assert due_ours(store, time.time() + 10, {run_id}) == []
    assert store.suspend_node(run_id, "ghost", event="x") is None


# --- timers ---------------------------------------------------------------------------------
def test_timer_not_due_then_due_fires_once(store: StateStore) -> None:
    run_id = running(store, "s")
    t0 = time.time()
    due = t0 + 100
    assert store.suspend_node(run_id, "s", due_at=due) is None
    assert status_of(store, run_id) == RUN_WAITING
    assert not store.fire_timer(run_id, "s", now=t0)
    assert status_of(store, run_id, "s") == NODE_WAITING
    job = msg("t.jobs")
    assert store.fire_timer(run_id, "s", now=due + 1, outbox=[job])
    assert status_of(store, run_id, "s") == NODE_PENDING
    assert status_of(store, run_id) == RUN_RUNNING
    assert store.get_wakeup(run_id, "s") == Wakeup(kind="timer", due_at=due)
    late = msg("t.jobs")
    assert not store.fire_timer(run_id, "s", now=due + 2, outbox=[late])
    ids = outbox_ids(store)
    assert job.id in ids and late.id not in ids
    assert kinds(store, run_id).count("timer.fired") == 1
    assert not store.fire_timer(run_id, "ghost", now=due + 2)
    assert not store.fire_timer(new_id(), "s", now=due + 2)


def test_timer_fires_once_under_concurrent_threads(store: StateStore) -> None:
    run_id = running(store, "s")
    due = time.time() - 1
    store.suspend_node(run_id, "s", due_at=due)
    jobs = [msg("t.jobs") for _ in range(THREADS)]
    results = in_parallel(
        THREADS, lambda i: store.fire_timer(run_id, "s", now=due + 5, outbox=[jobs[i]])
    )
    assert results.count(True) == 1
    ids = outbox_ids(store)
    assert [j.id in ids for j in jobs] == results
    assert kinds(store, run_id).count("timer.fired") == 1


def _fire_in_process(url: str, run_id: str, now: float, job_id: str) -> bool:
    """One process's try at firing node ``s``'s timer (module level: spawn pickles it)."""
    from state.records import OutboxMessage

    store = open_in_process(url)
    try:
        job = OutboxMessage(id=job_id, topic="t.jobs", key=run_id, value={"node": "s"})
        return store.fire_timer(run_id, "s", now=now, outbox=[job])
    finally:
        store.close()


@pytest.mark.several_processes
def test_timer_fires_once_under_concurrent_processes(spec: StoreSpec, store: StateStore) -> None:
    run_id = running(store, "s")
    due = time.time() - 1
    store.suspend_node(run_id, "s", due_at=due)
    job_ids = [new_id("job") for _ in range(PROCESSES)]
    ctx = multiprocessing.get_context("spawn")  # as Celery's workers: no state crosses a fork
    with ctx.Pool(PROCESSES) as pool:
        args = [(spec.url, run_id, due + 5, j) for j in job_ids]
        results = pool.starmap(_fire_in_process, args)
    assert results.count(True) == 1
    ids = outbox_ids(store)
    assert [j in ids for j in job_ids] == results
    assert kinds(store, run_id).count("timer.fired") == 1


def test_due_timers_returns_only_due_unfired_timers(store: StateStore) -> None:
    now = time.time()
    due_run = running(store, "s")
    store.suspend_node(due_run, "s", due_at=now - 10)
    later_run = running(store, "s")
    store.suspend_node(later_run, "s", due_at=now + 3600)
    fired_run = running(store, "s")
    store.suspend_node(fired_run, "s", due_at=now - 5)
    assert store.fire_timer(fired_run, "s", now=now)
    cancelled_run = running(store, "s")
    store.suspend_node(cancelled_run, "s", due_at=now - 5)
    store.cancel_run(cancelled_run, reason="stop")
    lost_race = running(store, "s", "t")
    store.suspend_node(lost_race, "s", due_at=now - 5)
    assert store.cancel_nodes(lost_race, ["s"], reason="lost the race") == ["s"]
    failed_run = running(store, "s", "t")
    store.suspend_node(failed_run, "s", due_at=now - 5)
    assert store.fail_node(failed_run, "t", 0, error="boom")  # fails the run
    ours = {due_run, later_run, fired_run, cancelled_run, lost_race, failed_run}

    timers = due_ours(store, now, ours)
    assert timers == [DueTimer(run_id=due_run, node_id="s", iteration=0, due_at=now - 10)]
    later = {t.run_id for t in due_ours(store, now + 3601, ours)}
    assert later == {due_run, later_run}
    # What due_timers leaves out, fire_timer refuses too.
    for run_id in (fired_run, cancelled_run, lost_race, failed_run):
        assert not store.fire_timer(run_id, "s", now=now + 3601)
    assert status_of(store, failed_run) == RUN_FAILED


def test_due_timers_oldest_first_and_limit(store: StateStore) -> None:
    now = time.time()
    runs = []
    for k in (3, 1, 2):
        run_id = running(store, "s")
        store.suspend_node(run_id, "s", due_at=now - 100 * k)
        runs.append(run_id)
    timers = due_ours(store, now, set(runs))
    assert [t.run_id for t in timers] == [runs[0], runs[2], runs[1]]
    assert len(store.due_timers(now=now, limit=2)) <= 2


def test_suspend_again_keeps_the_first_due_at(store: StateStore) -> None:
    run_id = running(store, "s")
    first = time.time() + 60
    store.suspend_node(run_id, "s", due_at=first)
    # The node runs again (a retry of the parked node), and parks with a later deadline.
    assert store.retry_node(run_id, "s", 0, attempt=1, error="worker lost")
    assert store.begin_attempt(run_id, "s", 0, 2) is not None
    assert store.suspend_node(run_id, "s", due_at=first + 3600) is None
    assert status_of(store, run_id, "s") == NODE_WAITING
    assert [t.due_at for t in due_ours(store, first + 1, {run_id})] == [first]
    assert store.fire_timer(run_id, "s", now=first + 1)
    assert store.get_wakeup(run_id, "s") == Wakeup(kind="timer", due_at=first)


def test_a_wait_with_a_timeout_is_woken_once(store: StateStore) -> None:
    # An event and a timer race for the same wait: whichever wakes it, the other does nothing.
    run_id = running(store, "w")
    due = time.time() + 30
    store.suspend_node(run_id, "w", event="reply", due_at=due)
    assert store.fire_timer(run_id, "w", now=due)
    assert store.deliver_event(run_id, "reply", event_id="r1").outcome == "stored"
    assert store.get_wakeup(run_id, "w") == Wakeup(kind="timer", event_name="reply", due_at=due)

    other = running(store, "w")
    store.suspend_node(other, "w", event="reply", due_at=due)
    assert store.deliver_event(other, "reply", event_id="r1", payload="yes").outcome == "matched"
    assert not store.fire_timer(other, "w", now=due + 1)
    assert due_ours(store, due + 1, {other}) == []
    wake = store.get_wakeup(other, "w")
    assert wake is not None and (wake.kind, wake.payload) == ("event", "yes")


def test_get_wakeup_of_unknown_or_unwoken_nodes(store: StateStore) -> None:
    run_id = running(store, "a")
    assert store.get_wakeup(run_id, "a") is None
    assert store.get_wakeup(run_id, "ghost") is None
    assert store.get_wakeup(new_id(), "a") is None


# --- run status -----------------------------------------------------------------------------
def test_the_last_running_node_suspending_moves_the_run_to_waiting(store: StateStore) -> None:
    run_id = running(store, "a", "b")
    store.suspend_node(run_id, "a", event="x")
    assert status_of(store, run_id) == RUN_RUNNING  # b still runs
    store.suspend_node(run_id, "b", due_at=time.time() + 60)
    assert status_of(store, run_id) == RUN_WAITING
    assert kinds(store, run_id).count("run.waiting") == 1
    store.deliver_event(run_id, "x", event_id="e1")
    assert status_of(store, run_id) == RUN_RUNNING


def test_a_node_made_pending_in_a_waiting_run_wakes_the_run(store: StateStore) -> None:
    # Only pending/running runs are reconciled: a waiting run must not hold a pending node.
    run_id = running(store, "a")
    store.suspend_node(run_id, "a", event="x")
    assert status_of(store, run_id) == RUN_WAITING
    assert store.fire_join(run_id, "j")  # e.g. a chord body firing its join late
    assert status_of(store, run_id) == RUN_RUNNING

    other = running(store, "a")
    store.suspend_node(other, "a", due_at=time.time() + 60)
    assert status_of(store, other) == RUN_WAITING
    assert store.retry_node(other, "a", 0, attempt=1, error="worker lost")
    assert status_of(store, other) == RUN_RUNNING


def test_a_pending_node_keeps_the_run_running(store: StateStore) -> None:
    run_id = started(store, "a", "b")
    store.begin_attempt(run_id, "a", 0, 1)
    store.suspend_node(run_id, "a", event="x")
    assert status_of(store, run_id) == RUN_RUNNING


# --- cancellation ---------------------------------------------------------------------------
def test_cancel_run_cancels_its_waits_and_timers(store: StateStore) -> None:
    run_id = running(store, "w", "s")
    now = time.time()
    store.suspend_node(run_id, "w", event="reply", due_at=now + 10)
    store.suspend_node(run_id, "s", due_at=now + 5)
    applied, before = store.cancel_run(run_id, reason="stop")
    assert applied and before is not None and before.status == RUN_WAITING
    assert status_of(store, run_id) == RUN_CANCELLED
    assert status_of(store, run_id, "w") == NODE_CANCELLED
    assert status_of(store, run_id, "s") == NODE_CANCELLED
    assert due_ours(store, now + 60, {run_id}) == []
    assert not store.fire_timer(run_id, "s", now=now + 60)
    assert store.deliver_event(run_id, "reply", event_id="r1").outcome == "finished"
    assert store.get_wakeup(run_id, "w") is None and store.get_wakeup(run_id, "s") is None


def test_a_cancelled_waiting_node_cannot_complete(store: StateStore) -> None:
    run_id = running(store, "s")
    store.suspend_node(run_id, "s", due_at=time.time() - 1)
    store.cancel_run(run_id, reason="stop")
    assert not store.commit_node(NodeCompletion(run_id=run_id, node_id="s")).applied
    assert status_of(store, run_id, "s") == NODE_CANCELLED


# --- fences ---------------------------------------------------------------------------------
def test_advance_fence_increments(store: StateStore) -> None:
    run_id = running(store, "a")
    run = store.get_run(run_id)
    assert run is not None and run.fence == 0
    assert store.advance_fence(run_id) == 1
    assert store.advance_fence(run_id) == 2
    run = store.get_run(run_id)
    assert run is not None and run.fence == 2
    assert store.advance_fence(new_id()) == 0  # no run: nothing to fence


def test_advance_fence_under_concurrency_hands_out_distinct_fences(store: StateStore) -> None:
    run_id = running(store, "a")
    fences = in_parallel(THREADS, lambda i: store.advance_fence(run_id))
    # Distinct and increasing. (On Scylla a write that timed out and was overtaken before its
    # re-read is not recognised as the caller's: that value is skipped, and held by nobody.)
    assert len(set(fences)) == THREADS and min(fences) >= 1
    run = store.get_run(run_id)
    assert run is not None and run.fence == max(fences)


def test_cancel_run_with_an_older_fence_is_refused(store: StateStore) -> None:
    run_id = running(store, "a")
    old = store.advance_fence(run_id)
    new = store.advance_fence(run_id)
    with pytest.raises(StaleFenceError, match="fence"):
        store.cancel_run(run_id, reason="late", fence=old)
    assert status_of(store, run_id) == RUN_RUNNING
    assert status_of(store, run_id, "a") == NODE_RUNNING
    applied, _ = store.cancel_run(run_id, reason="current", fence=new)
    assert applied and status_of(store, run_id) == RUN_CANCELLED


# --- reconciliation -------------------------------------------------------------------------
def _stall(store: StateStore, run_id: str) -> float:
    run = store.get_run(run_id)
    assert run is not None
    return run.updated_at


def test_mark_reconciled_applies_once_per_stall(store: StateStore) -> None:
    run_id = running(store, "a")
    since = _stall(store, run_id)
    fence = store.advance_fence(run_id)
    first, second = msg("t.jobs"), msg("t.jobs")
    assert store.mark_reconciled(run_id, stalled_since=since, fence=fence, outbox=[first])
    assert not store.mark_reconciled(run_id, stalled_since=since, fence=fence, outbox=[second])
    ids = outbox_ids(store)
    assert first.id in ids and second.id not in ids
    assert kinds(store, run_id).count("run.reconciled") == 1
    # The claim counts as progress: the run's next stall starts from it, and is claimed once.
    again = _stall(store, run_id)
    assert again > since
    third = msg("t.jobs")
    assert store.mark_reconciled(run_id, stalled_since=again, fence=fence, outbox=[third])
    assert third.id in outbox_ids(store)


def test_mark_reconciled_once_under_concurrent_callers(store: StateStore) -> None:
    run_id = running(store, "a")
    since = _stall(store, run_id)
    fence = store.advance_fence(run_id)
    jobs = [msg("t.jobs") for _ in range(THREADS)]
    results = in_parallel(
        THREADS,
        lambda i: store.mark_reconciled(run_id, stalled_since=since, fence=fence, outbox=[jobs[i]]),
    )
    assert results.count(True) == 1
    ids = outbox_ids(store)
    assert [j.id in ids for j in jobs] == results
    assert kinds(store, run_id).count("run.reconciled") == 1


def test_mark_reconciled_with_an_older_fence_is_refused(store: StateStore) -> None:
    run_id = running(store, "a")
    since = _stall(store, run_id)
    old = store.advance_fence(run_id)
    new = store.advance_fence(run_id)
    job = msg("t.jobs")
    with pytest.raises(StaleFenceError):
        store.mark_reconciled(run_id, stalled_since=since, fence=old, outbox=[job])
    assert job.id not in outbox_ids(store)
    assert "run.reconciled" not in kinds(store, run_id)
    assert store.mark_reconciled(run_id, stalled_since=since, fence=new, outbox=[job])


def test_mark_reconciled_after_progress_does_nothing(store: StateStore) -> None:
    run_id = started(store, "a")
    since = _stall(store, run_id)
    fence = store.advance_fence(run_id)
    time.sleep(0.01)
    assert store.begin_attempt(run_id, "a", 0, 1) is not None  # progress since the stall
    job = msg("t.jobs")
    assert not store.mark_reconciled(run_id, stalled_since=since, fence=fence, outbox=[job])
    assert job.id not in outbox_ids(store)
    # Nor on a finished run, nor on no run.
    store.finish_run(run_id, status=RUN_COMPLETED)
    assert not store.mark_reconciled(run_id, stalled_since=_stall(store, run_id), fence=fence)
    assert not store.mark_reconciled(new_id(), stalled_since=since, fence=0)


def test_a_stall_of_a_waiting_run_after_a_completion(store: StateStore) -> None:
    # Waiting runs make no progress while they wait; a wake is progress.
    run_id = running(store, "s")
    store.suspend_node(run_id, "s", due_at=time.time() - 1)
    since = _stall(store, run_id)
    time.sleep(0.01)
    assert store.fire_timer(run_id, "s", now=time.time())
    assert _stall(store, run_id) > since
    assert not store.mark_reconciled(run_id, stalled_since=since, fence=0)
    assert status_of(store, run_id, "s") == NODE_PENDING
    store.begin_attempt(run_id, "s", 0, 1)
    res = store.commit_node(NodeCompletion(run_id=run_id, node_id="s", output="slept"))
    assert res.applied and res.node.status == NODE_COMPLETED
