"""Inline successors in the engine: which successor a task runs itself, and the repair walk.

The engine is driven by hand here (``execute_node`` with an ``InlineBudget``), on a
SQLite file, so a "crash" is simply not running the successor the engine handed back:
exactly what a worker killed between two nodes of a chain leaves behind. The real
worker loop and a real kill are in ``tests/e2e/test_inline.py``.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flowbridge import NodeContext
from flowbridge.testing import Runner
from state import open_store
from tasks.blueprint import Blueprint
from tasks.engine import InlineBudget, execute_node
from tasks.registry import BlueprintRegistry, NodeRegistry
from tasks.settings import Settings


def _chain(bp_id: str, ids: str, *, metadata: dict[str, Any] | None = None, **cfg: Any) -> dict:
    return {
        "id": bp_id,
        "metadata": metadata or {},
        "nodes": [{"id": i, "uses": "count", "config": dict(cfg.get(i, {}))} for i in ids],
        "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(ids)],
    }


@pytest.fixture
def calls() -> Counter[str]:
    return Counter()


def _runner(tmp_path: Path, calls: Counter[str], *bps: dict[str, Any]) -> Runner:
    def count(ctx: NodeContext) -> dict[str, Any]:
        calls[ctx.node_id] += 1
        return {"node": ctx.node_id}

    nodes, blueprints = NodeRegistry(), BlueprintRegistry()
    nodes.register("count", count)
    for bp in bps:
        blueprints.register(Blueprint.from_dict(bp))
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    return Runner(store=store, node_registry=nodes, blueprint_registry=blueprints)


def _budget(nodes: int = 32, seconds: float = 60.0) -> InlineBudget:
    return InlineBudget(nodes=nodes - 1, deadline=time.monotonic() + seconds)


def _queued(runner: Runner) -> list[str]:
    """The node tasks waiting in the in-process queue, by node id."""
    return [q.task.node_id for q in runner.port.queue if q.task is not None]


def test_a_lone_plain_successor_is_handed_back_not_dispatched(
    tmp_path: Path, calls: Counter[str]
) -> None:
    runner = _runner(tmp_path, calls, _chain("abc", "abc"))
    run_id = runner.start("abc", drain=False)
    assert _queued(runner) == ["a"]
    runner.port.queue.clear()

    step = execute_node(runner.rt, run_id, "a", inline=_budget())

    assert (step.kind, step.then) == ("completed", ("b", 0))
    assert _queued(runner) == [], "the successor is this task's to run: nothing was sent"
    assert runner.store.get_node(run_id, "b").status == "pending", "committed as pending first"


@pytest.mark.parametrize(
    ("bp", "why"),
    [
        (_chain("off", "abc", metadata={"inline": False}), "metadata.inline is false"),
        (_chain("node-off", "abc", b={"inline": False}), "the successor says inline: false"),
        (_chain("timed", "abc", b={"timeout": 5000}), "a timeout is its own task's time limit"),
        (_chain("timed-a", "abc", a={"timeout": 5000}), "the current task has a time limit"),
    ],
    ids=["blueprint-off", "node-off", "successor-timeout", "own-timeout"],
)
def test_a_successor_that_must_not_run_inline_is_dispatched(
    tmp_path: Path, calls: Counter[str], bp: dict[str, Any], why: str
) -> None:
    runner = _runner(tmp_path, calls, bp)
    run_id = runner.start(bp["id"], drain=False)
    runner.port.queue.clear()

    step = execute_node(runner.rt, run_id, "a", inline=_budget())

    assert step.then is None, why
    assert _queued(runner) == ["b"], why


def test_fan_out_and_joins_go_through_celery(tmp_path: Path, calls: Counter[str]) -> None:
    bp = {
        "id": "fan",
        "nodes": [{"id": i, "uses": "count"} for i in ("a", "x", "y", "j")],
        "edges": [
            {"source": "a", "target": "x"},
            {"source": "a", "target": "y"},
            {"source": "x", "target": "j"},
            {"source": "y", "target": "j"},
        ],
    }
    runner = _runner(tmp_path, calls, bp)
    run_id = runner.start("fan", drain=False)
    runner.port.queue.clear()

    assert execute_node(runner.rt, run_id, "a", inline=_budget()).then is None
    runner.port.queue.clear()
    assert execute_node(runner.rt, run_id, "x", inline=_budget()).then is None, "a join is next"


def test_an_exhausted_budget_dispatches_the_successor(tmp_path: Path, calls: Counter[str]) -> None:
    runner = _runner(tmp_path, calls, _chain("abc", "abc"))
    run_id = runner.start("abc", drain=False)
    runner.port.queue.clear()

    step = execute_node(runner.rt, run_id, "a", inline=_budget(nodes=1))

    assert step.then is None
    assert _queued(runner) == ["b"]
    late = InlineBudget(nodes=5, deadline=time.monotonic() - 1)
    runner.port.queue.clear()
    assert execute_node(runner.rt, run_id, "b", inline=late).then is None, "out of time"
    assert _queued(runner) == ["c"]


def test_a_redelivered_task_walks_the_committed_chain_and_sends_what_a_crash_left(
    tmp_path: Path, calls: Counter[str]
) -> None:
    runner = _runner(tmp_path, calls, _chain("abcd", "abcd"))
    run_id = runner.start("abcd", drain=False)
    runner.port.queue.clear()
    budget = _budget()
    # The task of ``a`` runs a, then b itself, and its worker dies before it starts c.
    assert execute_node(runner.rt, run_id, "a", inline=budget).then == ("b", 0)
    assert execute_node(runner.rt, run_id, "b", inline=budget).then == ("c", 0)
    assert _queued(runner) == [], "c is pending and no message names it"

    # The broker redelivers a's task: a and b are done; the walk finds c and sends it.
    again = _budget()
    step = execute_node(runner.rt, run_id, "a", redelivered=True, inline=again)
    assert (step.kind, step.then) == ("duplicate", ("b", 0))
    step = execute_node(runner.rt, run_id, "b", inline=again)
    assert (step.kind, step.then) == ("duplicate", None)
    assert _queued(runner) == ["c"]
    assert calls == Counter({"a": 1, "b": 1}), "the walk runs no node code"

    runner.drain()
    assert runner.store.get_run(run_id).status == "completed"
    assert calls == Counter({"a": 1, "b": 1, "c": 1, "d": 1})


def test_settings_and_blueprint_fields_are_validated() -> None:
    assert InlineBudget.of(Settings.from_env({"FLOWBRIDGE_INLINE_NODES": "1"})) is None
    assert InlineBudget.of(Settings.from_env({"FLOWBRIDGE_INLINE_BUDGET_S": "0"})) is None
    budget = InlineBudget.of(Settings.from_env({"FLOWBRIDGE_INLINE_NODES": "3"}))
    assert budget is not None and budget.nodes == 2
    with pytest.raises(Exception, match="FLOWBRIDGE_RUN_EVENTS='maybe' must be on or off"):
        Settings.from_env({"FLOWBRIDGE_RUN_EVENTS": "maybe"})
    assert Settings.from_env({"FLOWBRIDGE_RUN_EVENTS": "off"}).run_events is False

    _, issues = Blueprint.parse(_chain("x", "ab", metadata={"inline": "no"}, a={"inline": 0}))
    messages = [i.message for i in issues]
    assert any("metadata.inline must be true or false, got 'no'" in m for m in messages)
    assert any("config.inline must be true or false, got 0" in m for m in messages)
    parsed = Blueprint.from_dict(
        _chain("y", "ab", metadata={"runEvents": False}, b={"inline": False})
    )
    assert (parsed.inline, parsed.run_events, parsed.node("b").config.inline) == (
        True,
        False,
        False,
    )
    assert Blueprint.from_dict(parsed.to_dict()) == parsed, "round-trips through flowcraft's JSON"
