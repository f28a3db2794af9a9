"""The code workflow tables (``StateStore.workflows``), held against every backend.

An activation is committed once, its consumed inbox items are never applied
again, timers are idempotent rows found by due time, a generation moves once.
"""

from __future__ import annotations

import time
from typing import Any

from state.constants import RUN_COMPLETED
from state.protocol import StateStore
from tests.contract.helpers import THREADS, in_parallel, make_run, new_id


def workflow_run(store: StateStore) -> str:
    run_id = new_id("wf")
    snapshot = {"kind": "workflow", "workflow": "trip", "version": 1}
    created, _ = store.create_run(make_run(run_id, snapshot=snapshot), start_nodes=())
    assert created
    return run_id


def activation(n: int, *keys: str, at: float = 1000.0) -> dict[str, Any]:
    return {
        "n": n,
        "at": at,
        "inputs": [{"key": k, "type": "result"} for k in keys],
        "commands": [{"seq": n, "type": "activity", "name": f"a{n}"}],
    }


def test_inbox_items_are_deduplicated_by_key_and_kept_in_arrival_order(store: StateStore) -> None:
    run_id = workflow_run(store)
    wf = store.workflows
    assert wf.put_inbox(run_id, "s:start", {"key": "s:start", "type": "start", "value": {"a": 1}})
    assert wf.put_inbox(run_id, "r:2", {"key": "r:2", "type": "result", "seq": 2})
    assert wf.put_inbox(run_id, "r:1", {"key": "r:1", "type": "result", "seq": 1})
    assert not wf.put_inbox(run_id, "r:2", {"key": "r:2", "type": "result", "seq": 2})
    state = wf.load(run_id)
    assert state is not None
    assert [k for k, _ in state.inbox] == ["s:start", "r:2", "r:1"]
    assert state.inbox[0][1]["value"] == {"a": 1}
    assert (state.gen, state.last, state.dispatched, state.blocked) == (0, 0, 0, None)
    assert state.run.snapshot["kind"] == "workflow"


def test_an_activation_commits_once_and_only_after_the_previous_one(store: StateStore) -> None:
    run_id = workflow_run(store)
    wf = store.workflows
    wf.put_inbox(run_id, "s:start", {"key": "s:start", "type": "start"})
    assert not wf.commit(run_id, gen=0, activation=activation(2), consumed=[]), "a gap"
    assert wf.commit(run_id, gen=0, activation=activation(1, "s:start"), consumed=["s:start"])
    assert not wf.commit(run_id, gen=0, activation=activation(1), consumed=[]), "a duplicate"
    assert not wf.commit(run_id, gen=1, activation=activation(2), consumed=[]), "another gen"
    state = wf.load(run_id)
    assert state is not None and state.last == 1 and state.inbox == ()
    assert state.history[0]["commands"][0]["name"] == "a1"
    assert not wf.put_inbox(run_id, "s:start", {"key": "s:start"}), "a consumed key stays consumed"


def test_of_concurrent_activations_built_on_one_history_exactly_one_commits(
    store: StateStore,
) -> None:
    run_id = workflow_run(store)
    wf = store.workflows
    results = in_parallel(
        THREADS,
        lambda i: wf.commit(run_id, gen=0, activation={**activation(1), "worker": i}, consumed=[]),
    )
    assert results.count(True) == 1
    state = wf.load(run_id)
    assert state is not None and state.last == 1
    assert state.history[0]["worker"] == results.index(True)


def test_a_finished_run_takes_no_more_activations(store: StateStore) -> None:
    run_id = workflow_run(store)
    assert store.finish_run(run_id, status=RUN_COMPLETED, output=1)
    assert not store.workflows.commit(run_id, gen=0, activation=activation(1), consumed=[])
    store.workflows.finish(run_id, gen=0)  # retention of its rows: harmless to repeat
    store.workflows.finish(run_id, gen=0)


def test_committing_records_progress_on_the_run(store: StateStore) -> None:
    run_id = workflow_run(store)
    before = store.get_run(run_id)
    assert before is not None
    assert store.workflows.commit(run_id, gen=0, activation=activation(1), consumed=[])
    after = store.get_run(run_id)
    assert after is not None and after.updated_at >= before.updated_at
    assert run_id not in store.find_stalled(
        status=after.status, older_than=after.updated_at - 1e-6, limit=1000
    )


def test_the_dispatched_mark_only_moves_forward_and_blocked_round_trips(
    store: StateStore,
) -> None:
    run_id = workflow_run(store)
    wf = store.workflows
    wf.mark_dispatched(run_id, gen=0, n=2)
    wf.mark_dispatched(run_id, gen=0, n=1)
    report = {"error": "replay diverged", "activation": 3, "expected": {"type": "timer"}}
    wf.set_blocked(run_id, report)
    state = wf.load(run_id)
    assert state is not None and state.dispatched == 2 and state.blocked == report
    wf.set_blocked(run_id, None)
    state = wf.load(run_id)
    assert state is not None and state.blocked is None


def test_a_commit_with_nothing_to_send_carries_its_dispatched_mark(store: StateStore) -> None:
    run_id = workflow_run(store)
    wf = store.workflows
    assert wf.commit(run_id, gen=0, activation=activation(1), consumed=[])
    state = wf.load(run_id)
    assert state is not None and (state.last, state.dispatched) == (1, 0)
    assert wf.commit(run_id, gen=0, activation=activation(2), consumed=[], dispatched=True)
    state = wf.load(run_id)
    assert state is not None and (state.last, state.dispatched) == (2, 2)
    # A refused commit (a duplicate) moves nothing.
    assert not wf.commit(run_id, gen=0, activation=activation(2), consumed=[], dispatched=True)
    wf.mark_dispatched(run_id, gen=0, n=1)
    state = wf.load(run_id)
    assert state is not None and state.dispatched == 2


def test_timers_are_idempotent_rows_found_by_due_time_while_the_run_is_active(
    store: StateStore,
) -> None:
    run_id = workflow_run(store)
    other = workflow_run(store)
    wf = store.workflows
    t0 = time.time()
    wf.set_timers(run_id, gen=0, put=[(3, t0 + 100), (5, t0 + 200), (7, t0 + 9e8)])
    wf.set_timers(run_id, gen=0, put=[(3, t0 + 100)])  # written twice: still one timer
    wf.set_timers(other, gen=0, put=[(1, t0 + 150)])
    now = t0 + 250
    due = [t for t in wf.due_timers(now=now) if t.run_id in (run_id, other)]
    assert [(t.run_id, t.seq, t.due_at) for t in due] == [
        (run_id, 3, t0 + 100),
        (other, 1, t0 + 150),
        (run_id, 5, t0 + 200),
    ]
    wf.set_timers(run_id, gen=0, delete=[(3, t0 + 100)])
    assert [t.seq for t in wf.due_timers(now=now) if t.run_id == run_id] == [5]
    assert store.finish_run(other, status=RUN_COMPLETED)
    assert not [t for t in wf.due_timers(now=now) if t.run_id == other], "a finished run's"


def test_a_generation_moves_once_and_starts_from_its_own_start_item(store: StateStore) -> None:
    run_id = workflow_run(store)
    wf = store.workflows
    wf.put_inbox(run_id, "s:start", {"key": "s:start", "type": "start", "value": 1})
    wf.commit(run_id, gen=0, activation=activation(1, "s:start"), consumed=["s:start"])
    wf.put_inbox(run_id, "e:early", {"key": "e:early", "type": "event", "name": "go"})
    wf.set_timers(run_id, gen=0, put=[(4, time.time() - 10)])
    start = {"key": "s:start:1", "type": "start", "value": 2}
    results = in_parallel(THREADS, lambda _: wf.next_generation(run_id, gen=0, start=start))
    assert results.count(True) == 1
    state = wf.load(run_id)
    assert state is not None
    assert (state.gen, state.last, state.dispatched) == (1, 0, 0)
    assert [k for k, _ in state.inbox] == ["e:early", "s:start:1"], "unconsumed items carry over"
    assert not [t for t in wf.due_timers(now=time.time()) if t.run_id == run_id]
    assert wf.commit(run_id, gen=1, activation=activation(1, "s:start:1"), consumed=["s:start:1"])
