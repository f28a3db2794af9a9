"""What the built-ins and flowcraft's semantics need of every store, held against every backend.

A run's initial context, context deletes, a child run's parent link, records
created by their own task (batch items), pending records at other iterations
(loops) and batch pages.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from state.constants import (
    NODE_COMPLETED,
    NODE_PENDING,
    NODE_RUNNING,
    RUN_COMPLETED,
    RUN_RUNNING,
)
from state.protocol import StateStore
from state.records import NodeCompletion
from tests.contract.helpers import (
    THREADS,
    StoreSpec,
    in_parallel,
    kinds,
    make_run,
    new_id,
    started,
)


def test_a_run_starts_with_its_context(store: StateStore) -> None:
    run_id = new_id()
    created, _ = store.create_run(
        make_run(run_id), start_nodes=("a",), context={"order": {"id": 7}, "n": 1}
    )
    assert created
    assert store.get_context(run_id) == {"order": {"id": 7}, "n": 1}
    again, _ = store.create_run(make_run(run_id), start_nodes=("a",), context={"n": 99})
    assert not again
    assert store.get_context(run_id) == {"order": {"id": 7}, "n": 1}, "a redelivered start"


def test_a_completion_deletes_context_keys_once(store: StateStore) -> None:
    run_id = new_id()
    store.create_run(make_run(run_id), start_nodes=("a", "b"), context={"x": 1, "y": 2, "z": 3})
    store.begin_attempt(run_id, "a", 0, 1)
    res = store.commit_node(
        NodeCompletion(
            run_id=run_id,
            node_id="a",
            context_writes={"w": 4},
            context_deletes=("x", "never-there"),
        )
    )
    assert res.applied
    assert store.get_context(run_id) == {"y": 2, "z": 3, "w": 4}
    store.begin_attempt(run_id, "b", 0, 1)
    store.commit_node(NodeCompletion(run_id=run_id, node_id="b", context_writes={"x": "back"}))
    dup = store.commit_node(NodeCompletion(run_id=run_id, node_id="a", context_deletes=("x",)))
    assert not dup.applied
    assert store.get_context(run_id) == {"y": 2, "z": 3, "w": 4, "x": "back"}, (
        "a redelivered completion deletes nothing a later one wrote"
    )


def test_a_child_run_keeps_its_parent(store: StateStore) -> None:
    parent = started(store, "call")
    child_id = new_id("child")
    link = {"run_id": parent, "node_id": "call", "iteration": 2}
    created, stored = store.create_run(make_run(child_id, parent=link), start_nodes=("s",))
    assert created and stored.parent == link
    read = store.get_run(child_id)
    assert read is not None and read.parent == link
    assert store.get_run(child_id, snapshot=False).parent == link  # type: ignore[union-attr]
    assert store.get_run(parent).parent is None  # type: ignore[union-attr]


def test_a_completion_creates_pending_records_at_other_iterations(store: StateStore) -> None:
    run_id = started(store, "end")
    store.begin_attempt(run_id, "end", 0, 1)
    res = store.commit_node(
        NodeCompletion(
            run_id=run_id,
            node_id="end",
            edges_taken=("loop", "after"),
            pending_at=(("loop", 1), ("after", 0)),
        )
    )
    assert res.applied
    loop = store.get_node(run_id, "loop", 1)
    assert loop is not None and loop.status == NODE_PENDING and loop.iteration == 1
    assert store.get_node(run_id, "loop", 0) is None
    assert store.get_nodes(run_id, ["after"])["after"].status == NODE_PENDING
    assert store.begin_attempt(run_id, "loop", 1, 1) is not None


def test_a_record_its_own_task_creates_is_claimed_once(store: StateStore) -> None:
    run_id = started(store, "scatter")
    item = "scatter[7]"
    assert store.begin_attempt(run_id, item, 0, 1) is None, "without create: no record, no claim"
    results = in_parallel(THREADS, lambda _: store.begin_attempt(run_id, item, 0, 1, create=True))
    claimed = [r for r in results if r is not None]
    assert len(claimed) == 1, "of concurrent first deliveries exactly one claims it"
    assert claimed[0].status == NODE_RUNNING and claimed[0].attempts == 1
    store.commit_node(NodeCompletion(run_id=run_id, node_id=item, output={"i": 7}))
    again = store.begin_attempt(run_id, item, 0, 1, create=True)
    assert again is None, "a redelivery of a completed item claims nothing"
    rec = store.get_node(run_id, item)
    assert rec is not None and rec.status == NODE_COMPLETED and rec.output == {"i": 7}
    assert kinds(store, run_id).count("node.completed") == 1


def test_batch_pages_round_trip_and_upsert(store: StateStore) -> None:
    run_id = started(store, "a")
    store.put_batch(run_id, "s:0:in", {0: [1, 2, 3], 1: [{"k": "v"}, None], 2: []})
    store.put_batch(run_id, "s:0:out", {0: ["x"]})
    assert store.get_batch(run_id, "s:0:in", [0, 1, 2, 5]) == {
        0: [1, 2, 3],
        1: [{"k": "v"}, None],
        2: [],
    }
    store.put_batch(run_id, "s:0:in", {1: ["again"]})
    assert store.get_batch(run_id, "s:0:in", [1]) == {1: ["again"]}
    assert store.get_batch(run_id, "s:0:out", [0, 1]) == {0: ["x"]}
    assert store.get_batch(new_id(), "s:0:in", [0]) == {}


def test_batch_pages_and_the_parent_link_expire_with_their_run(
    spec: StoreSpec, make_store: Callable[..., StateStore]
) -> None:
    retention = 2.0 if spec.ttl_expiry else 1.0  # CQL TTLs are whole seconds
    store = make_store(retention_s=retention)
    live, done = started(store, "a"), started(store, "a")
    for run_id in (live, done):
        store.put_batch(run_id, "b", {0: [1], 1: [2]})
    assert store.finish_run(done, status=RUN_COMPLETED)
    time.sleep(retention + 1.5)
    store.purge_expired()
    assert store.get_batch(done, "b", [0, 1]) == {}
    assert store.get_batch(live, "b", [0, 1]) == {0: [1], 1: [2]}, "a live run's pages stay"


def test_create_run_without_context_starts_empty(store: StateStore) -> None:
    run_id = started(store, "a", status=RUN_RUNNING)
    assert store.get_context(run_id) == {}
