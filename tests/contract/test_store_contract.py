"""The ``StateStore`` contract: every behaviour of the protocol, held against every backend.

Each test runs on SQLite, in memory and on Scylla/Cassandra (a real server; see
conftest.py). On Scylla the keyspace is shared by the session, so
tests use fresh run ids and look only at their own rows in the global reads
(``list_runs``, ``find_stalled``, ``pending_outbox``).
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections.abc import Callable

import pytest

from state.constants import (
    NODE_CANCELLED,
    NODE_COMPLETED,
    NODE_FAILED,
    NODE_PENDING,
    NODE_RUNNING,
    NODE_SKIPPED,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_PAUSED,
    RUN_PENDING,
    RUN_RUNNING,
    RUN_WAITING,
    SCHEMA_VERSION,
)
from state.errors import SchemaError, StateError
from state.keys import OUTBOX_SHARDS, outbox_shard
from state.protocol import StateStore
from state.records import Arrival, NodeCompletion, OutboxMessage, RunFinish
from tests.contract.helpers import (
    PROCESSES,
    THREADS,
    StoreSpec,
    in_parallel,
    kinds,
    make_run,
    msg,
    new_id,
    open_in_process,
    started,
)


# --- schema ---------------------------------------------------------------------------------
def test_migrate_is_idempotent(store: StateStore) -> None:
    store.migrate()
    store.migrate()
    run_id = started(store, "a")
    assert store.get_run(run_id) is not None


def test_migrate_creates_a_fresh_store_that_a_second_connection_can_use(spec: StoreSpec) -> None:
    # On a real cluster this waits for schema agreement (it used to wait 60 s and fail).
    fresh_spec = spec.fresh()
    first, second = fresh_spec.open(), fresh_spec.open()
    try:
        first.migrate()
        first.migrate()
        run_id = started(first, "a")
        assert second.get_run(run_id) is not None
    finally:
        fresh_spec.discard(first)
        first.close()
        second.close()


def test_newer_schema_is_refused(spec: StoreSpec, store: StateStore) -> None:
    spec.set_schema_version(store, SCHEMA_VERSION + 1)
    try:
        with pytest.raises(SchemaError, match="newer"):
            store.migrate()
    finally:  # the Scylla keyspace is shared by the session
        spec.set_schema_version(store, SCHEMA_VERSION)


def test_an_older_schema_is_upgraded(spec: StoreSpec, store: StateStore) -> None:
    # Scylla: the keyspace has the version-2 columns already, as after a migration cut short:
    # running the version-2 migration again skips them and records the version.
    spec.set_schema_version(store, 1)
    try:
        store.migrate()
        assert spec.schema_version(store) == SCHEMA_VERSION
    finally:  # the Scylla keyspace is shared by the session
        if spec.schema_version(store) != SCHEMA_VERSION:
            spec.set_schema_version(store, SCHEMA_VERSION)
    run_id = started(store, "a")
    assert store.get_run(run_id) is not None


def test_missing_schema_says_migrate(spec: StoreSpec) -> None:
    fresh_spec = spec.fresh()
    fresh = fresh_spec.open()
    try:
        with pytest.raises(SchemaError, match="migrate"):
            fresh.get_run("nope")
    finally:
        if spec.backend == "memory":
            fresh_spec.discard(fresh)
        fresh.close()


# --- runs -----------------------------------------------------------------------------------
def test_create_run_is_idempotent(store: StateStore) -> None:
    run_id = new_id()
    first = msg()
    created, run = store.create_run(
        make_run(run_id, input={"v": 1}), start_nodes=["a", "b"], outbox=[first]
    )
    assert created and run.status == RUN_RUNNING and run.input == {"v": 1}
    assert run.created_at > 0
    again = msg()
    created, stored = store.create_run(
        make_run(run_id, input={"v": 2}, status=RUN_PENDING), start_nodes=["c"], outbox=[again]
    )
    assert not created
    assert stored.input == {"v": 1} and stored.status == RUN_RUNNING
    assert stored.snapshot == run.snapshot and stored.blueprint_id == "bp"
    # The duplicate wrote nothing: no node, history or outbox row of its own.
    assert set(store.get_nodes(run_id, ["a", "b", "c"])) == {"a", "b"}
    assert all(n.status == NODE_PENDING for n in store.get_nodes(run_id, ["a", "b"]).values())
    assert kinds(store, run_id) == ["run.created"]
    ids = {m.id for m in store.pending_outbox(limit=10_000)}
    assert first.id in ids and again.id not in ids


def test_create_run_in_a_terminal_status(store: StateStore) -> None:
    run_id = new_id()
    created, run = store.create_run(
        make_run(run_id, status=RUN_FAILED, error="bad input"), start_nodes=()
    )
    assert created and run.status == RUN_FAILED
    stored = store.get_run(run_id)
    assert stored is not None and stored.status == RUN_FAILED and stored.error == "bad input"
    assert kinds(store, run_id) == ["run.created", "run.failed"]


def test_cancel_marker_then_create(store: StateStore) -> None:
    run_id = new_id()
    applied, before = store.cancel_run(run_id, reason="user")
    assert applied and before is None
    marker = store.get_run(run_id)
    assert marker is not None and marker.status == RUN_CANCELLED and marker.error == "user"
    created, stored = store.create_run(make_run(run_id), start_nodes=["a"])
    assert not created and stored.status == RUN_CANCELLED
    assert store.get_nodes(run_id, ["a"]) == {}
    assert kinds(store, run_id) == ["run.cancelled"]
    assert store.get_history(run_id)[0].data == {"reason": "user", "marker": True}
    # A second cancel finds a finished run.
    applied, before = store.cancel_run(run_id, reason="again")
    assert not applied and before is not None and before.status == RUN_CANCELLED


def test_cancel_active_run_cancels_its_active_nodes(store: StateStore) -> None:
    run_id = started(store, "a", "b")
    res = store.commit_node(NodeCompletion(run_id=run_id, node_id="a", output=1, pending=("c",)))
    assert res.applied
    event = msg()
    applied, before = store.cancel_run(run_id, reason="stop", outbox=[event])
    assert applied and before is not None and before.status == RUN_RUNNING
    nodes = store.get_nodes(run_id, ["a", "b", "c"])
    assert nodes["a"].status == NODE_COMPLETED
    assert nodes["b"].status == NODE_CANCELLED and nodes["c"].status == NODE_CANCELLED
    assert nodes["b"].error == "stop"
    run = store.get_run(run_id)
    assert run is not None and run.status == RUN_CANCELLED and run.error == "stop"
    assert kinds(store, run_id)[-1] == "run.cancelled"
    assert event.id in {m.id for m in store.pending_outbox(limit=10_000)}
    applied, before = store.cancel_run(run_id, reason="again")
    assert not applied and before is not None and before.status == RUN_CANCELLED


def test_a_cancelled_run_read_before_its_follow_ups_were_written_shows_its_nodes_cancelled(
    store: StateStore, spec: StoreSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The canceller may stop (or be slow) between the run's write and its node writes."""
    run_id = started(store, "a")
    if spec.backend == "scylla":
        # Fault injection: the conditional write of the run lands, its effects do not.
        monkeypatch.setattr(store._runs.fx, "apply_run", lambda *a, **k: None)  # type: ignore[attr-defined]
    applied, _ = store.cancel_run(run_id, reason="stop")
    monkeypatch.undo()
    assert applied
    run = store.get_run(run_id)
    assert run is not None and run.status == RUN_CANCELLED
    assert store.get_nodes(run_id, ["a"])["a"].status == NODE_CANCELLED, "no cancelled run waits"


def test_set_run_status_is_conditional(store: StateStore) -> None:
    run_id = started(store, "a", status=RUN_PENDING)
    assert store.set_run_status(run_id, from_={RUN_PENDING}, to=RUN_RUNNING)
    assert not store.set_run_status(run_id, from_={RUN_PENDING}, to=RUN_RUNNING)
    assert not store.set_run_status(new_id(), from_={RUN_PENDING}, to=RUN_RUNNING)
    run = store.get_run(run_id)
    assert run is not None and run.status == RUN_RUNNING
    assert kinds(store, run_id) == ["run.created", "run.running"]


def test_finish_run_once(store: StateStore) -> None:
    run_id = started(store, "a")
    event = msg()
    assert store.finish_run(run_id, status=RUN_COMPLETED, output={"a": 1}, outbox=[event])
    second = msg()
    assert not store.finish_run(run_id, status=RUN_FAILED, error="late", outbox=[second])
    assert not store.finish_run(new_id(), status=RUN_COMPLETED)
    run = store.get_run(run_id)
    assert run is not None and run.status == RUN_COMPLETED and run.output == {"a": 1}
    assert run.error is None and run.terminal
    assert kinds(store, run_id).count("run.completed") == 1
    ids = {m.id for m in store.pending_outbox(limit=10_000)}
    assert event.id in ids and second.id not in ids


def test_finish_concurrently_applies_once(store: StateStore) -> None:
    run_id = started(store, "a")
    results = in_parallel(
        THREADS, lambda i: store.finish_run(run_id, status=RUN_COMPLETED, output=i)
    )
    assert results.count(True) == 1
    assert kinds(store, run_id).count("run.completed") == 1


# --- nodes ----------------------------------------------------------------------------------
def test_get_nodes_reads_only_the_given_existing_ids(store: StateStore) -> None:
    run_id = started(store, "a", "b")
    assert set(store.get_nodes(run_id, ["a", "x"])) == {"a"}
    assert store.get_node(run_id, "x") is None
    node = store.get_node(run_id, "b")
    assert node is not None and node.status == NODE_PENDING and node.attempts == 0
    assert node.iteration == 0 and node.active


def test_get_run_and_node_reads_what_get_run_and_get_node_read(store: StateStore) -> None:
    run_id = started(store, "a")
    run, node = store.get_run_and_node(run_id, "a", snapshot=False)
    assert run is not None and run.run_id == run_id and run.snapshot == {}
    assert run == store.get_run(run_id, snapshot=False)
    assert node is not None and node == store.get_node(run_id, "a")
    run, node = store.get_run_and_node(run_id, "x")
    assert run is not None and run.snapshot == store.get_run(run_id).snapshot  # type: ignore[union-attr]
    assert node is None
    assert store.get_run_and_node(new_id(), "a") == (None, None)


def test_begin_attempt_counts_deliveries(store: StateStore) -> None:
    run_id = started(store, "a")
    first = store.begin_attempt(run_id, "a", 0, 1)
    assert first is not None and first.status == NODE_RUNNING
    assert (first.attempts, first.deliveries) == (1, 1)
    # A concurrent duplicate of a running node claims nothing...
    assert store.begin_attempt(run_id, "a", 0, 1) is None
    # ...a redelivery after a lost worker takes it over and counts the delivery.
    again = store.begin_attempt(run_id, "a", 0, 1, takeover=True)
    assert again is not None and (again.attempts, again.deliveries) == (1, 2)
    retry = store.begin_attempt(run_id, "a", 0, 2, takeover=True)
    assert retry is not None and (retry.attempts, retry.deliveries) == (2, 1)
    stored = store.get_node(run_id, "a")
    assert stored is not None and (stored.attempts, stored.deliveries) == (2, 1)
    assert kinds(store, run_id).count("node.started") == 3
    store.commit_node(NodeCompletion(run_id=run_id, node_id="a", attempt=2))
    assert store.begin_attempt(run_id, "a", 0, 3, takeover=True) is None
    assert store.begin_attempt(run_id, "missing", 0, 1) is None


def test_the_runs_first_claim_moves_it_to_running(store: StateStore) -> None:
    for status in (RUN_PENDING, RUN_WAITING):
        run_id = started(store, "a", status=status)
        assert store.begin_attempt(run_id, "a", 0, 1, start_run=True) is not None
        run = store.get_run(run_id)
        assert run is not None and run.status == RUN_RUNNING, status
    # Only a pending or waiting run: a paused one stays paused.
    run_id = started(store, "a", status=RUN_PAUSED)
    assert store.begin_attempt(run_id, "a", 0, 1, start_run=True) is not None
    assert store.get_run(run_id).status == RUN_PAUSED  # type: ignore[union-attr]
    # Without start_run the claim leaves the run as it is.
    run_id = started(store, "a", status=RUN_PENDING)
    assert store.begin_attempt(run_id, "a", 0, 1) is not None
    assert store.get_run(run_id).status == RUN_PENDING  # type: ignore[union-attr]


def test_begin_attempt_claims_once_under_concurrency(store: StateStore) -> None:
    run_id = started(store, "a")
    results = in_parallel(THREADS, lambda i: store.begin_attempt(run_id, "a", 0, 1))
    assert sum(r is not None for r in results) == 1
    node = store.get_node(run_id, "a")
    assert node is not None and node.deliveries == 1


def test_a_completion_carrying_the_runs_end_finishes_it_when_nothing_else_is_active(
    store: StateStore,
) -> None:
    event = msg()
    end = RunFinish(status=RUN_COMPLETED, output={"a": 1}, outbox=(event,))
    run_id = started(store, "a")
    store.begin_attempt(run_id, "a", 0, 1)
    res = store.commit_node(NodeCompletion(run_id=run_id, node_id="a", output=1, finish=end))
    assert res.applied and res.run_status == RUN_COMPLETED
    run = store.get_run(run_id)
    assert run is not None and run.status == RUN_COMPLETED and run.output == {"a": 1}
    assert kinds(store, run_id)[-1] == "run.completed"
    assert event.id in {m.id for m in store.pending_outbox(limit=1000)}
    # A duplicate delivery's completion changes nothing, the run's end included.
    again = store.commit_node(NodeCompletion(run_id=run_id, node_id="a", output=2, finish=end))
    assert not again.applied and kinds(store, run_id).count("run.completed") == 1


def test_a_completion_carrying_the_runs_end_leaves_a_run_with_other_work_running(
    spec: StoreSpec, store: StateStore
) -> None:
    if spec.backend == "scylla":
        pytest.skip("no transaction spans the partitions: the engine's read is the check")
    end = RunFinish(status=RUN_COMPLETED, output={})
    run_id = started(store, "a", "b")  # b is still pending
    store.begin_attempt(run_id, "a", 0, 1)
    res = store.commit_node(NodeCompletion(run_id=run_id, node_id="a", finish=end))
    assert res.applied and res.run_status == RUN_RUNNING
    assert store.get_run(run_id).status == RUN_RUNNING  # type: ignore[union-attr]


def test_commit_node_applies_everything_once(store: StateStore) -> None:
    run_id = started(store, "a")
    store.begin_attempt(run_id, "a", 0, 1)
    event = msg()
    cp = NodeCompletion(
        run_id=run_id,
        node_id="a",
        output={"ok": True},
        action="approved",
        edges_taken=("b", "j"),
        pending=("b",),
        skipped=("c",),
        arrivals=(Arrival(join_id="j", predecessor="c", outcome="skipped"),),
        context_writes={"total": 3},
        outbox=(event,),
    )
    res = store.commit_node(cp)
    assert res.applied and res.run_status == RUN_RUNNING
    assert res.node.status == NODE_COMPLETED and res.node.output == {"ok": True}
    assert res.node.edges_taken == ("b", "j") and res.node.action == "approved"
    nodes = store.get_nodes(run_id, ["a", "b", "c"])
    assert nodes["a"].edges_taken == ("b", "j") and nodes["a"].attempts == 1
    assert nodes["b"].status == NODE_PENDING and nodes["c"].status == NODE_SKIPPED
    assert store.get_arrivals(run_id, "j") == {"c": "skipped"}
    assert store.get_context(run_id) == {"total": 3}
    assert event.id in {m.id for m in store.pending_outbox(limit=10_000)}
    # A duplicate delivery changes nothing and returns the first completion.
    dup = store.commit_node(
        NodeCompletion(
            run_id=run_id, node_id="a", output="other", pending=("z",), context_writes={"total": 9}
        )
    )
    assert not dup.applied and dup.node.output == {"ok": True} and dup.run_status == RUN_RUNNING
    assert store.get_node(run_id, "z") is None
    assert store.get_context(run_id) == {"total": 3}
    assert kinds(store, run_id).count("node.completed") == 1


def test_commit_of_a_node_without_record_fails(store: StateStore) -> None:
    run_id = started(store, "a")
    with pytest.raises(StateError, match="no record"):
        store.commit_node(NodeCompletion(run_id=run_id, node_id="ghost"))


def test_commit_keeps_the_highest_attempt(store: StateStore) -> None:
    run_id = started(store, "a")
    store.begin_attempt(run_id, "a", 0, 3)
    res = store.commit_node(NodeCompletion(run_id=run_id, node_id="a", attempt=1, output=1))
    assert res.applied and res.node.attempts == 3
    stored = store.get_node(run_id, "a")
    assert stored is not None and stored.attempts == 3


def test_conditional_completion_under_concurrent_threads(store: StateStore) -> None:
    run_id = started(store, "a")

    def complete(i: int) -> bool:
        cp = NodeCompletion(
            run_id=run_id,
            node_id="a",
            output=i,
            pending=(f"next{i}",),
            arrivals=(Arrival(join_id="j", predecessor="a", outcome="completed"),),
            context_writes={"winner": i},
        )
        return store.commit_node(cp).applied

    results = in_parallel(THREADS, complete)
    assert results.count(True) == 1
    winner = results.index(True)
    node = store.get_node(run_id, "a")
    assert node is not None and node.output == winner
    created = store.get_nodes(run_id, [f"next{i}" for i in range(THREADS)])
    assert set(created) == {f"next{winner}"}
    assert store.get_context(run_id) == {"winner": winner}
    assert store.get_arrivals(run_id, "j") == {"a": "completed"}
    assert kinds(store, run_id).count("node.completed") == 1


def _complete_in_process(url: str, run_id: str, i: int) -> bool:
    """One process's try at completing node ``a`` (module level: the spawn context pickles it)."""
    store = open_in_process(url)
    try:
        cp = NodeCompletion(run_id=run_id, node_id="a", output=i, pending=(f"next{i}",))
        return store.commit_node(cp).applied
    finally:
        store.close()


@pytest.mark.several_processes
def test_conditional_completion_under_concurrent_processes(
    spec: StoreSpec, store: StateStore
) -> None:
    run_id = started(store, "a")
    ctx = multiprocessing.get_context("spawn")  # as Celery's workers: no state crosses a fork
    with ctx.Pool(PROCESSES) as pool:
        args = [(spec.url, run_id, i) for i in range(PROCESSES)]
        results = pool.starmap(_complete_in_process, args)
    assert results.count(True) == 1
    winner = results.index(True)
    assert set(store.get_nodes(run_id, [f"next{i}" for i in range(PROCESSES)])) == {f"next{winner}"}


def test_late_completion_after_finish_creates_no_successors(store: StateStore) -> None:
    run_id = started(store, "a", "b")
    assert store.finish_run(run_id, status=RUN_FAILED, error="a failed")
    event = msg()
    res = store.commit_node(
        NodeCompletion(
            run_id=run_id,
            node_id="b",
            output="late",
            pending=("c",),
            skipped=("d",),
            arrivals=(Arrival(join_id="j", predecessor="b", outcome="completed"),),
            context_writes={"late": True},
            outbox=(event,),
        )
    )
    assert res.applied and res.run_status == RUN_FAILED
    node = store.get_node(run_id, "b")
    assert node is not None and node.status == NODE_COMPLETED and node.output == "late"
    assert store.get_nodes(run_id, ["c", "d"]) == {}
    assert store.get_arrivals(run_id, "j") == {}
    assert store.get_context(run_id) == {}
    assert event.id not in {m.id for m in store.pending_outbox(limit=10_000)}
    run = store.get_run(run_id)
    assert run is not None and run.status == RUN_FAILED


def test_retry_node_conditions(store: StateStore) -> None:
    run_id = started(store, "a")
    store.begin_attempt(run_id, "a", 0, 2)
    assert store.retry_node(run_id, "a", 0, attempt=1, error="boom")
    node = store.get_node(run_id, "a")
    assert node is not None and node.status == NODE_PENDING
    assert node.attempts == 2 and node.error == "boom"
    assert store.retry_node(run_id, "a", 0, attempt=3, error="again")
    node = store.get_node(run_id, "a")
    assert node is not None and node.attempts == 3
    store.commit_node(NodeCompletion(run_id=run_id, node_id="a", attempt=4))
    assert not store.retry_node(run_id, "a", 0, attempt=5, error="too late")
    assert not store.retry_node(run_id, "missing", 0, attempt=1, error="x")
    assert kinds(store, run_id).count("node.retry") == 2


def test_fail_node_starts_the_fallback(store: StateStore) -> None:
    run_id = started(store, "a")
    assert store.fail_node(run_id, "a", 0, error="boom", fallback="fb")
    nodes = store.get_nodes(run_id, ["a", "fb"])
    assert nodes["a"].status == NODE_FAILED and nodes["a"].error == "boom"
    assert nodes["fb"].status == NODE_PENDING
    run = store.get_run(run_id)
    assert run is not None and run.status == RUN_RUNNING
    assert not store.fail_node(run_id, "a", 0, error="again", fallback="fb")


def test_fail_node_fails_the_run(store: StateStore) -> None:
    run_id = started(store, "a", "b")
    event = msg()
    assert store.fail_node(run_id, "a", 0, error="boom", outbox=[event])
    run = store.get_run(run_id)
    assert run is not None and run.status == RUN_FAILED and run.error == "boom"
    assert kinds(store, run_id)[-2:] == ["node.failed", "run.failed"]
    assert event.id in {m.id for m in store.pending_outbox(limit=10_000)}
    assert not store.fail_node(run_id, "a", 0, error="again")
    # The other node is still recorded as it was; the run does not restart.
    node = store.get_node(run_id, "b")
    assert node is not None and node.status == NODE_PENDING


def test_fail_node_without_failing_the_run(store: StateStore) -> None:
    run_id = started(store, "a")
    assert store.fail_node(run_id, "a", 0, error="boom", fail_run=False)
    run = store.get_run(run_id)
    assert run is not None and run.status == RUN_RUNNING
    node = store.get_node(run_id, "a")
    assert node is not None and node.status == NODE_FAILED


def test_a_tolerated_failure_arrives_at_its_join(store: StateStore) -> None:
    run_id = started(store, "a")
    arrival = Arrival(join_id="j", predecessor="a", outcome="failed")
    assert store.fail_node(
        run_id, "a", 0, error="boom", fail_run=False, skipped=("s",), arrivals=(arrival,)
    )
    assert store.get_arrivals(run_id, "j") == {"a": "failed"}
    node = store.get_node(run_id, "s")
    assert node is not None and node.status == NODE_SKIPPED
    # Once: a redelivered failure writes nothing more.
    other = Arrival(join_id="k", predecessor="a", outcome="failed")
    assert not store.fail_node(run_id, "a", 0, error="again", fail_run=False, arrivals=(other,))
    assert store.get_arrivals(run_id, "k") == {}
    run = store.get_run(run_id)
    assert run is not None and run.status == RUN_RUNNING


def test_cancel_nodes_cancels_only_active_ones(store: StateStore) -> None:
    run_id = started(store, "a", "b", "c")
    store.commit_node(NodeCompletion(run_id=run_id, node_id="c"))
    store.begin_attempt(run_id, "b", 0, 1)
    cancelled = store.cancel_nodes(run_id, ["a", "b", "c", "ghost"], reason="lost the race")
    assert cancelled == ["a", "b"]
    nodes = store.get_nodes(run_id, ["a", "b", "c"])
    assert nodes["a"].status == NODE_CANCELLED and nodes["a"].error == "lost the race"
    assert nodes["b"].status == NODE_CANCELLED and nodes["c"].status == NODE_COMPLETED
    assert kinds(store, run_id).count("node.cancelled") == 2
    assert store.cancel_nodes(run_id, ["a", "b"], reason="again") == []
    # A cancelled node cannot complete or start any more.
    assert not store.commit_node(NodeCompletion(run_id=run_id, node_id="a")).applied
    assert store.begin_attempt(run_id, "a", 0, 2, takeover=True) is None
    run = store.get_run(run_id)
    assert run is not None and run.status == RUN_RUNNING


# --- joins, context, history ---------------------------------------------------------------
def test_join_arrivals_are_a_set(store: StateStore) -> None:
    run_id = started(store, "a", "b")
    arrive = (Arrival(join_id="j", predecessor="a", outcome="completed"),)
    assert store.commit_node(NodeCompletion(run_id=run_id, node_id="a", arrivals=arrive)).applied
    # The same predecessor again (a duplicate delivery) is still one arrival.
    assert not store.commit_node(
        NodeCompletion(run_id=run_id, node_id="a", arrivals=arrive)
    ).applied
    assert store.get_arrivals(run_id, "j") == {"a": "completed"}
    store.commit_node(
        NodeCompletion(
            run_id=run_id,
            node_id="b",
            status=NODE_SKIPPED,
            arrivals=(Arrival(join_id="j", predecessor="b", outcome="skipped"),),
        )
    )
    assert store.get_arrivals(run_id, "j") == {"a": "completed", "b": "skipped"}
    assert store.get_arrivals(run_id, "other") == {}


def test_fire_join_exactly_once_under_concurrency(store: StateStore) -> None:
    run_id = started(store, "a")
    results = in_parallel(THREADS, lambda i: store.fire_join(run_id, "j", 0))
    assert results.count(True) == 1
    node = store.get_node(run_id, "j")
    assert node is not None and node.status == NODE_PENDING
    assert kinds(store, run_id).count("join.fired") == 1
    assert not store.fire_join(run_id, "j")


def test_a_skipped_join_never_fires(store: StateStore) -> None:
    run_id = started(store, "a")
    store.commit_node(NodeCompletion(run_id=run_id, node_id="a", skipped=("j",)))
    assert not store.fire_join(run_id, "j")
    node = store.get_node(run_id, "j")
    assert node is not None and node.status == NODE_SKIPPED


def test_context_one_row_per_key_last_write_wins(store: StateStore) -> None:
    run_id = started(store, "a", "b", "c")
    store.commit_node(
        NodeCompletion(run_id=run_id, node_id="a", context_writes={"x": 1, "y": {"deep": [1]}})
    )
    store.commit_node(NodeCompletion(run_id=run_id, node_id="b", context_writes={"x": 2}))
    store.commit_node(NodeCompletion(run_id=run_id, node_id="c", context_writes={"z": None}))
    assert store.get_context(run_id) == {"x": 2, "y": {"deep": [1]}, "z": None}
    assert store.get_context(new_id()) == {}


def test_context_of_parallel_branches_never_conflicts(store: StateStore) -> None:
    nodes = [f"n{i}" for i in range(THREADS)]
    run_id = started(store, *nodes)
    in_parallel(
        THREADS,
        lambda i: store.commit_node(
            NodeCompletion(run_id=run_id, node_id=nodes[i], context_writes={f"k{i}": i})
        ),
    )
    assert store.get_context(run_id) == {f"k{i}": i for i in range(THREADS)}


def test_history_is_in_commit_order(store: StateStore) -> None:
    run_id = started(store, "a")
    for i in range(5):
        store.append_history(run_id, f"custom.{i}", node_id="a", data={"i": i})
    events = store.get_history(run_id)
    assert [e.kind for e in events] == ["run.created"] + [f"custom.{i}" for i in range(5)]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert len({e.seq for e in events}) == len(events)
    assert events[-1].data == {"i": 4} and events[-1].node_id == "a"
    assert all(a.at <= b.at for a, b in itertools.pairwise(events))
    assert store.get_history(new_id()) == []


# --- the status index -----------------------------------------------------------------------
def test_find_stalled_returns_old_runs_with_that_status(store: StateStore) -> None:
    old = started(store, "a")
    old_pending = started(store, "a", status=RUN_PENDING)
    moved_on = started(store, "a")
    time.sleep(0.05)
    threshold = time.time()
    time.sleep(0.05)
    fresh = started(store, "a")
    assert store.begin_attempt(moved_on, "a", 0, 1) is not None  # progress after the threshold
    finished = started(store, "a")
    store.finish_run(finished, status=RUN_COMPLETED)

    stalled = store.find_stalled(status=RUN_RUNNING, older_than=threshold, limit=10_000)
    assert old in stalled
    assert fresh not in stalled and moved_on not in stalled
    assert old_pending not in stalled and finished not in stalled
    assert old_pending in store.find_stalled(status=RUN_PENDING, older_than=threshold, limit=10_000)
    # Progress after the threshold takes a run out of the stalled set.
    store.begin_attempt(old, "a", 0, 1)
    assert old not in store.find_stalled(status=RUN_RUNNING, older_than=threshold, limit=10_000)


def test_find_stalled_respects_limit(store: StateStore) -> None:
    for _ in range(3):
        started(store, "a")
    time.sleep(0.02)
    assert len(store.find_stalled(status=RUN_RUNNING, older_than=time.time(), limit=2)) == 2


def test_list_runs_newest_first(store: StateStore) -> None:
    ours = []
    for status in (RUN_RUNNING, RUN_PENDING, RUN_RUNNING):
        ours.append(started(store, "a", status=status))
        time.sleep(0.01)
    done = started(store, "a")
    store.finish_run(done, status=RUN_COMPLETED)
    ours.append(done)

    listed = [r.run_id for r in store.list_runs(limit=10_000) if r.run_id in ours]
    assert listed == list(reversed(ours))
    running = [r for r in store.list_runs(status=RUN_RUNNING, limit=10_000) if r.run_id in ours]
    assert [r.run_id for r in running] == [ours[2], ours[0]]
    assert all(r.status == RUN_RUNNING for r in running)
    completed = [r.run_id for r in store.list_runs(status=RUN_COMPLETED, limit=10_000)]
    assert done in completed and ours[0] not in completed
    assert len(store.list_runs(limit=2)) == 2
    # A small limit still sees every status of the newest runs.
    assert [r.run_id for r in store.list_runs(limit=1)] == [done]
    assert [r.run_id for r in store.list_runs(status=RUN_PENDING, limit=1)] == [ours[1]]


# --- outbox ---------------------------------------------------------------------------------
def test_outbox_pending_and_delete(store: StateStore) -> None:
    first, second, third = msg("t.a", {"n": 1}), msg("t.b", {"n": 2}), msg("t.c", {"n": 3})
    run_id = new_id()
    store.create_run(make_run(run_id), start_nodes=["a"], outbox=[first])
    time.sleep(0.01)
    store.commit_node(NodeCompletion(run_id=run_id, node_id="a", outbox=(second, third)))

    pending = [
        m for m in store.pending_outbox(limit=10_000) if m.id in {first.id, second.id, third.id}
    ]
    assert pending[0].id == first.id
    assert {m.id for m in pending} == {first.id, second.id, third.id}
    assert pending[0].topic == "t.a" and pending[0].key == "k" and pending[0].value == {"n": 1}
    assert all(m.created_at > 0 for m in pending)

    store.delete_outbox([first.id, "never-written"])
    store.delete_outbox([])
    left = {m.id for m in store.pending_outbox(limit=10_000)}
    assert first.id not in left and {second.id, third.id} <= left
    # A store that did not read the rows can still delete them by id.
    store.close()
    store.delete_outbox([second.id])
    assert second.id not in {m.id for m in store.pending_outbox(limit=10_000)}


def test_outbox_reads_only_the_shards_asked_for(store: StateStore) -> None:
    rows = [msg("t.s", {"n": n}) for n in range(40)]
    store.create_run(make_run(new_id()), start_nodes=[], outbox=rows)
    ours = {m.id for m in rows}
    by_shard: dict[int, set[str]] = {}
    for m in rows:
        by_shard.setdefault(outbox_shard(m.id), set()).add(m.id)
    assert len(by_shard) > 2, "40 ids spread over the shards"
    held = set(sorted(by_shard)[:2])

    read = {m.id for m in store.pending_outbox(limit=10_000, shards=held)} & ours
    assert read == by_shard[min(held)] | by_shard[max(held)]
    assert store.pending_outbox(limit=10_000, shards=()) == []
    everything = {m.id for m in store.pending_outbox(limit=10_000, shards=range(OUTBOX_SHARDS))}
    assert ours <= everything
    # Publishing one shard's rows leaves the others pending.
    store.delete_outbox(sorted(read))
    left = {m.id for m in store.pending_outbox(limit=10_000)} & ours
    assert left == ours - read


def test_outbox_ids_are_stable(store: StateStore) -> None:
    event = msg()
    run_a = new_id()
    store.create_run(make_run(run_a), start_nodes=[], outbox=[event])
    store.create_run(make_run(new_id()), start_nodes=[], outbox=[event])  # the same id again
    rows = [m for m in store.pending_outbox(limit=10_000) if m.id == event.id]
    assert len(rows) == 1


# --- retention ------------------------------------------------------------------------------
def test_retention_expires_finished_runs_only(
    spec: StoreSpec, make_store: Callable[..., StateStore]
) -> None:
    retention = 2.0 if spec.ttl_expiry else 1.0  # CQL TTLs are whole seconds
    store = make_store(retention_s=retention)
    live = started(store, "a")
    store.commit_node(
        NodeCompletion(run_id=live, node_id="a", pending=("b",), context_writes={"k": 1})
    )
    done = started(store, "a")
    store.commit_node(
        NodeCompletion(
            run_id=done,
            node_id="a",
            pending=("b",),
            arrivals=(Arrival(join_id="j", predecessor="a", outcome="completed"),),
            context_writes={"k": 1},
        )
    )
    assert store.finish_run(done, status=RUN_COMPLETED, output=1)
    time.sleep(retention + 1.5)
    purged = store.purge_expired()
    assert purged >= (0 if spec.ttl_expiry else 1)  # Scylla: the TTL did it

    assert store.get_run(done) is None
    assert store.get_nodes(done, ["a", "b"]) == {}
    assert store.get_context(done) == {} and store.get_history(done) == []
    assert store.get_arrivals(done, "j") == {}
    assert done not in [r.run_id for r in store.list_runs(status=RUN_COMPLETED, limit=10_000)]

    run = store.get_run(live)
    assert run is not None and run.status == RUN_RUNNING
    assert set(store.get_nodes(live, ["a", "b"])) == {"a", "b"}
    assert store.get_context(live) == {"k": 1}
    assert kinds(store, live)[0] == "run.created"


def test_runs_born_finished_and_cancel_markers_expire_too(
    spec: StoreSpec, make_store: Callable[..., StateStore]
) -> None:
    retention = 2.0 if spec.ttl_expiry else 1.0  # CQL TTLs are whole seconds
    store = make_store(retention_s=retention)
    rejected = new_id()
    store.create_run(
        make_run(rejected, status=RUN_FAILED, error="rejected: unknown blueprint"),
        start_nodes=[],
    )
    marker = new_id()
    store.cancel_run(marker, reason="cancel before start")
    time.sleep(retention + 1.5)
    store.purge_expired()

    assert store.get_run(rejected) is None
    assert store.get_run(marker) is None


def test_get_run_can_leave_the_snapshot_out(store: StateStore) -> None:
    run_id = new_id()
    snapshot = {"id": "b", "nodes": [{"id": "a", "uses": "x"}], "edges": []}
    store.create_run(make_run(run_id, snapshot=snapshot), start_nodes=["a"])
    full, light = store.get_run(run_id), store.get_run(run_id, snapshot=False)

    assert full is not None and light is not None
    assert full.snapshot == snapshot
    assert light.snapshot == {}
    assert (light.status, light.input, light.blueprint_id, light.fence) == (
        full.status,
        full.input,
        full.blueprint_id,
        full.fence,
    )


def test_outbox_rows_keep_their_headers(store: StateStore) -> None:
    # The trace context rides with an emitted record to the relay.
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    row = OutboxMessage(
        id=new_id("msg"),
        topic="t.user",
        key="k",
        value={"a": 1},
        headers=(("traceparent", parent),),
    )
    run_id = started(store, "a")
    store.begin_attempt(run_id, "a", 0, 1)
    store.commit_node(NodeCompletion(run_id=run_id, node_id="a", outbox=(row,)))
    (found,) = [m for m in store.pending_outbox(limit=10_000) if m.id == row.id]
    assert found.headers == (("traceparent", parent),)
    store.delete_outbox([row.id])
