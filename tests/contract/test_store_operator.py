"""The contract of an operator's actions: pause, resume and retry, each applied exactly once.

Every test runs on SQLite, in memory and on Scylla/Cassandra (see conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from state.constants import (
    NODE_COMPLETED,
    NODE_FAILED,
    NODE_PENDING,
    NODE_RUNNING,
    NODE_WAITING,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_PAUSED,
    RUN_RUNNING,
    RUN_WAITING,
)
from state.protocol import StateStore
from state.records import Arrival, NodeCompletion
from tests.contract.helpers import (
    THREADS,
    StoreSpec,
    in_parallel,
    kinds,
    make_run,
    msg,
    new_id,
    started,
)


def _failed_at_b(store: StateStore) -> str:
    """A run whose node a completed (to b and to join j) and whose b then failed the run."""
    run_id = started(store, "a")
    store.begin_attempt(run_id, "a", 0, 1)
    store.commit_node(
        NodeCompletion(
            run_id=run_id,
            node_id="a",
            output={"a": 1},
            edges_taken=("b", "j"),
            pending=("b",),
            arrivals=(Arrival(join_id="j", predecessor="a", outcome="completed"),),
        )
    )
    store.begin_attempt(run_id, "b", 0, 1)
    assert store.fail_node(run_id, "b", 0, error="card declined")
    assert store.get_run(run_id).status == RUN_FAILED
    return run_id


# --- pause and resume -----------------------------------------------------------------------
def test_pause_applies_once_and_resume_continues(store: StateStore) -> None:
    run_id = started(store, "a")
    assert store.pause_run(run_id)
    assert not store.pause_run(run_id), "a second pause finds it paused"
    assert store.get_run(run_id).status == RUN_PAUSED
    assert store.resume_run(run_id)
    assert not store.resume_run(run_id), "a second resume finds it running"
    run = store.get_run(run_id)
    assert run.status == RUN_RUNNING, "its node a is pending: the run runs"
    assert kinds(store, run_id).count("run.paused") == 1
    assert kinds(store, run_id).count("run.resumed") == 1


def test_a_paused_run_whose_nodes_are_all_parked_resumes_waiting(store: StateStore) -> None:
    run_id = started(store, "w")
    store.begin_attempt(run_id, "w", 0, 1)
    assert store.suspend_node(run_id, "w", event="approve") is None
    assert store.get_run(run_id).status == RUN_WAITING
    assert store.pause_run(run_id)
    assert store.resume_run(run_id)
    assert store.get_run(run_id).status == RUN_WAITING
    assert store.get_node(run_id, "w").status == NODE_WAITING


def test_pause_refuses_finished_and_missing_runs_and_a_paused_run_can_be_cancelled(
    store: StateStore,
) -> None:
    done = started(store, "a")
    assert store.finish_run(done, status=RUN_COMPLETED)
    assert not store.pause_run(done)
    assert not store.pause_run(new_id())
    assert not store.resume_run(new_id())
    paused = started(store, "a")
    assert store.pause_run(paused)
    applied, _ = store.cancel_run(paused, reason="stop")
    assert applied and store.get_run(paused).status == RUN_CANCELLED


def test_a_node_in_flight_commits_in_a_paused_run_with_its_successors(store: StateStore) -> None:
    run_id = started(store, "a")
    store.begin_attempt(run_id, "a", 0, 1)
    assert store.pause_run(run_id)
    result = store.commit_node(
        NodeCompletion(run_id=run_id, node_id="a", edges_taken=("b",), pending=("b",))
    )
    assert result.applied and result.run_status == RUN_PAUSED
    assert store.get_node(run_id, "b").status == NODE_PENDING, "resume will dispatch it"
    assert store.get_run(run_id).status == RUN_PAUSED


def test_a_pause_racing_a_commit_both_apply_once(store: StateStore) -> None:
    runs = [started(store, "a") for _ in range(THREADS // 2)]
    for run_id in runs:
        store.begin_attempt(run_id, "a", 0, 1)

    def act(i: int) -> bool:
        run_id = runs[i // 2]
        if i % 2:
            return store.pause_run(run_id)
        done = NodeCompletion(run_id=run_id, node_id="a", edges_taken=("b",), pending=("b",))
        return store.commit_node(done).applied

    assert all(in_parallel(len(runs) * 2, act))
    for run_id in runs:
        assert store.get_run(run_id).status == RUN_PAUSED
        assert store.get_node(run_id, "a").status == NODE_COMPLETED
        assert store.get_node(run_id, "b").status == NODE_PENDING
        assert kinds(store, run_id).count("node.completed") == 1


# --- retry ------------------------------------------------------------------------------------
def test_retry_from_a_node_keeps_the_outputs_before_it(store: StateStore) -> None:
    run_id = _failed_at_b(store)
    out = store.retry_run(
        run_id,
        from_nodes=["b"],
        reset=["b"],
        expect={"a": NODE_COMPLETED, "j": ""},
        outbox=[msg()],
    )
    assert out.applied and out.attempt == 2 and out.status == RUN_FAILED
    run = store.get_run(run_id)
    assert (run.status, run.attempt, run.error) == (RUN_RUNNING, 2, None)
    a, b = store.get_node(run_id, "a"), store.get_node(run_id, "b")
    assert (a.status, a.output) == (NODE_COMPLETED, {"a": 1}), "kept, with its output"
    assert (b.status, b.attempts, b.error) == (NODE_PENDING, 0, None), "a fresh record"
    assert store.get_arrivals(run_id, "j") == {"a": "completed"}
    retried = [e for e in store.get_history(run_id) if e.kind == "run.retried"]
    assert [e.data for e in retried] == [
        {"attempt": 2, "from": ["b"], "reset": ["b"], "was": RUN_FAILED}
    ]
    # The run goes on as any run: b completes, arrives at j.
    store.begin_attempt(run_id, "b", 0, 1)
    res = store.commit_node(
        NodeCompletion(
            run_id=run_id,
            node_id="b",
            edges_taken=("j",),
            arrivals=(Arrival(join_id="j", predecessor="b", outcome="completed"),),
        )
    )
    assert res.applied and res.run_status == RUN_RUNNING
    assert store.get_arrivals(run_id, "j") == {"a": "completed", "b": "completed"}


def test_retry_resets_descendants_and_the_arrivals_they_made(store: StateStore) -> None:
    run_id = started(store, "a")
    store.begin_attempt(run_id, "a", 0, 1)
    store.commit_node(
        NodeCompletion(run_id=run_id, node_id="a", edges_taken=("b",), pending=("b",))
    )
    store.begin_attempt(run_id, "b", 0, 1)
    store.commit_node(
        NodeCompletion(
            run_id=run_id,
            node_id="b",
            edges_taken=("c", "j"),
            pending=("c",),
            arrivals=(Arrival(join_id="j", predecessor="b", outcome="completed"),),
        )
    )
    store.begin_attempt(run_id, "c", 0, 1)
    store.commit_node(NodeCompletion(run_id=run_id, node_id="c"))
    assert store.finish_run(run_id, status=RUN_COMPLETED, output={"c": None})

    out = store.retry_run(run_id, from_nodes=["b"], reset=["b", "c"], expect={"a": NODE_COMPLETED})
    assert out.applied and out.attempt == 2
    assert store.get_node(run_id, "b").status == NODE_PENDING
    assert store.get_node(run_id, "c") is None, "re-created when b completes again"
    assert store.get_arrivals(run_id, "j") == {}, "b's arrival went with b"
    assert store.get_run(run_id).output is None
    # A second retry of the same run, later: attempt 3.
    store.fail_node(run_id, "b", 0, error="again")
    assert store.retry_run(run_id, from_nodes=["b"], reset=["b"], expect={}).attempt == 3


def test_retry_refuses_a_live_run_and_a_missing_one(store: StateStore) -> None:
    live = started(store, "a")
    out = store.retry_run(live, from_nodes=["a"], reset=["a"], expect={})
    assert (out.applied, out.status, out.attempt) == (False, RUN_RUNNING, 1)
    assert store.get_node(live, "a").status == NODE_PENDING, "nothing was reset"
    assert store.retry_run(new_id(), from_nodes=["a"], reset=["a"], expect={}).attempt == 0


def test_two_retries_at_once_apply_once(store: StateStore) -> None:
    run_id = _failed_at_b(store)
    results = in_parallel(
        THREADS,
        lambda _: store.retry_run(
            run_id, from_nodes=["b"], reset=["b"], expect={"a": NODE_COMPLETED}
        ),
    )
    assert sum(r.applied for r in results) == 1
    assert store.get_run(run_id).attempt == 2
    assert kinds(store, run_id).count("run.retried") == 1


def test_a_retry_racing_a_late_completion_applies_once_and_loses_nothing(
    store: StateStore,
) -> None:
    def failed_with_c_in_flight() -> str:
        run_id = started(store, "b", "c")
        for n in ("b", "c"):
            store.begin_attempt(run_id, n, 0, 1)
        assert store.fail_node(run_id, "b", 0, error="declined")
        return run_id

    # The completion first: the retry sees c moved and is refused; read again, it applies.
    run_id = failed_with_c_in_flight()
    late = NodeCompletion(run_id=run_id, node_id="c", edges_taken=("d",), pending=("d",))
    assert store.commit_node(late).applied
    out = store.retry_run(run_id, from_nodes=["b"], reset=["b"], expect={"c": NODE_RUNNING})
    assert not out.applied and out.moved == ("c",)
    assert store.get_node(run_id, "b").status == NODE_FAILED, "nothing was reset"
    # c completed on the finished run: what it would have written comes with the retry.
    out = store.retry_run(
        run_id,
        from_nodes=["b", "d"],
        reset=["b"],
        expect={"c": NODE_COMPLETED, "d": "", "e": ""},
        skipped=["e"],
        arrivals=[Arrival(join_id="j", predecessor="c", outcome="completed")],
    )
    assert out.applied
    assert store.get_node(run_id, "d").status == NODE_PENDING
    assert store.get_node(run_id, "e").status == "skipped"
    assert store.get_arrivals(run_id, "j") == {"c": "completed"}

    # Both at once: each applies once, and a completion that lands on the live run keeps
    # its successor.
    for _ in range(3):
        run_id = failed_with_c_in_flight()
        late = NodeCompletion(run_id=run_id, node_id="c", edges_taken=("d",), pending=("d",))

        def act(i: int, run_id: str = run_id, late: NodeCompletion = late) -> bool:
            if i == 0:
                return store.commit_node(late).applied
            return store.retry_run(
                run_id, from_nodes=["b"], reset=["b"], expect={"c": NODE_RUNNING}
            ).applied

        committed, retried = in_parallel(2, act)
        assert committed, "the completion applies whatever the retry does"
        assert kinds(store, run_id).count("node.completed") == 1
        if retried:
            assert store.get_run(run_id).status == RUN_RUNNING
            assert store.get_node(run_id, "d") is not None, "c's successor was not lost"
            assert kinds(store, run_id).count("run.retried") == 1
        else:
            assert store.get_run(run_id).status == RUN_FAILED


def test_a_retried_run_is_no_longer_expired_by_retention(
    spec: StoreSpec, make_store: Callable[..., StateStore]
) -> None:
    retention = 2
    store = make_store(retention_s=retention)
    run_id = _failed_at_b(store)
    assert store.retry_run(run_id, from_nodes=["b"], reset=["b"], expect={}).applied
    time.sleep(retention + 1.5)
    store.purge_expired()
    run = store.get_run(run_id)
    assert run is not None and run.status == RUN_RUNNING and run.snapshot
    assert store.get_node(run_id, "a").output == {"a": 1}
    assert store.get_node(run_id, "b").status == NODE_PENDING
    assert store.get_arrivals(run_id, "j") == {"a": "completed"}
    assert "run.created" in kinds(store, run_id)


# --- a rejected start, started later --------------------------------------------------------
def test_a_rejected_start_is_replaced_once_by_a_later_start_of_its_run_id(
    store: StateStore,
) -> None:
    run_id = new_id()
    rejected = make_run(
        run_id, status=RUN_FAILED, snapshot={}, version="", error="rejected: unknown blueprint"
    )
    created, _ = store.create_run(rejected, start_nodes=[])
    assert created
    real = make_run(run_id, status="pending", input={"n": 2})
    results = in_parallel(
        THREADS, lambda _: store.restart_rejected(real, start_nodes=["a"], outbox=[msg()])
    )
    assert sum(results) == 1
    run = store.get_run(run_id)
    assert (run.status, run.error, run.input, run.snapshot) == (
        "pending",
        None,
        {"n": 2},
        real.snapshot,
    )
    assert store.get_node(run_id, "a").status == NODE_PENDING
    assert kinds(store, run_id).count("run.created") == 2, "the rejection stays in the history"
    assert not store.restart_rejected(real, start_nodes=["a"]), "it is a run now"
    assert run_id in [r.run_id for r in store.list_runs(status="pending", limit=10_000)]
    assert run_id not in [r.run_id for r in store.list_runs(status=RUN_FAILED, limit=10_000)]


def test_a_failed_run_that_started_is_never_replaced(store: StateStore) -> None:
    run_id = _failed_at_b(store)
    assert not store.restart_rejected(make_run(run_id, status="pending"), start_nodes=["a"])
    assert store.get_node(run_id, "a").output == {"a": 1}
