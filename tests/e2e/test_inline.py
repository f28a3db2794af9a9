"""Inline successors in real workers: a chain runs in one Celery task, budgeted, crash-safe.

Each ``whoami`` node records the id of the Celery task that ran it, so the tests see
which nodes shared a task. What the engine decides is in tests/unit/test_inline_engine.py;
here the worker loop, a real SIGKILL between two nodes and the run events are checked.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Stack, on_both_stores

pytestmark = pytest.mark.e2e


def _tasks_of(stack: Stack, run_id: str) -> list[tuple[str, str]]:
    raw = stack.redis.lrange(f"{stack.iso.redis_prefix}whoami:{run_id}", 0, -1)
    pairs = [item.decode().split("=", 1) for item in raw]
    return [(node, task) for node, task in pairs]


def _groups(stack: Stack, run_id: str) -> list[int]:
    """How many consecutive nodes of the chain each Celery task ran."""
    return [len(list(g)) for _, g in itertools.groupby(_tasks_of(stack, run_id), lambda p: p[1])]


def _run(stack: Stack, blueprint: str) -> str:
    handle = stack.client.start(blueprint, {})
    assert handle.result(timeout=60)["status"] == "completed"
    return handle.run_id


def test_a_chain_runs_in_one_task_each_node_committed(stack: Stack) -> None:
    run_id = _run(stack, "inline5")

    tasks = _tasks_of(stack, run_id)
    assert [n for n, _ in tasks] == ["i0", "i1", "i2", "i3", "i4"]
    assert len({t for _, t in tasks}) == 1, f"one Celery task ran the whole chain: {tasks}"
    kinds = [h.kind for h in stack.store.get_history(run_id)]
    assert kinds.count("node.completed") == 5, "each node still commits on its own"


def test_the_budget_hands_the_rest_of_the_chain_to_celery(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(FLOWBRIDGE_INLINE_NODES="3")
    stack.start_bridge()
    stack.start_worker()
    assert _groups(stack, _run(stack, "inline5")) == [3, 2]


def test_a_node_with_inline_false_gets_its_own_task(stack: Stack) -> None:
    assert _groups(stack, _run(stack, "inline-off")) == [2, 3]


def test_inline_nodes_1_makes_every_node_a_task(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(FLOWBRIDGE_INLINE_NODES="1")
    stack.start_bridge()
    stack.start_worker()
    assert _groups(stack, _run(stack, "inline5")) == [1, 1, 1, 1, 1]


@on_both_stores
def test_a_worker_killed_between_two_inline_nodes_loses_nothing(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    # Killed once, after i0 committed and before i1 ran in the same task: i1 is pending
    # and no message names it. The task's redelivery repairs it.
    stack = stack_factory(FLOWBRIDGE_FAULT=f"before_inline@{tmp_path / 'crashed'}")
    stack.start_bridge()
    stack.start_worker()
    run_id = _run(stack, "inline5")

    assert (tmp_path / "crashed").exists(), "the crash point was reached"
    assert [stack.effects(f"i{i}") for i in range(5)] == [1, 1, 1, 1, 1], "each node ran once"
    kinds = [h.kind for h in stack.store.get_history(run_id)]
    assert kinds.count("node.completed") == 5
    assert kinds.count("run.completed") == 1
    assert len(_groups(stack, run_id)) == 2, "the first task ran i0; its redelivery the rest"
    assert stack.procs["worker"].poll() is None, "the worker survives its killed pool process"


def _run_events(stack: Stack, run_ids: set[str], count: int) -> list[str]:
    records = stack.read_topic(
        "runs", count, timeout=8, where=lambda r: r.key is not None and r.key.decode() in run_ids
    )
    return sorted(f"{r.key.decode()}:{json.loads(r.value)['type']}" for r in records)


def test_run_events_are_opt_out_per_blueprint_and_globally(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory()
    stack.start_bridge()
    stack.start_worker()
    loud, quiet = _run(stack, "linear"), _run(stack, "quiet")
    events = _run_events(stack, {loud, quiet}, 3)
    assert events == [f"{loud}:run.completed", f"{loud}:run.started"], events
    stack.close()

    off = stack_factory(FLOWBRIDGE_RUN_EVENTS="off")
    off.start_bridge()
    off.start_worker()
    silent = _run(off, "linear")
    assert _run_events(off, {silent}, 1) == []
    assert off.store.get_run(silent).status == "completed", "the store has the run all the same"
