"""What a retry re-runs and keeps, on the production engine in one process (``Runner``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from flowbridge import NodeContext, NodeError
from tasks.engine import pause_run, start_run
from tasks.errors import RetryError
from tests.unit.test_testing_runner import chain, make_runner


def test_retry_from_the_failed_node_keeps_what_came_before_and_reruns_what_follows() -> None:
    calls: Counter[str] = Counter()
    broken = {"charge"}

    def work(ctx: NodeContext) -> dict[str, Any]:
        calls[ctx.node_id] += 1
        if ctx.node_id in broken:
            raise NodeError("declined", retryable=False)
        return {"by": ctx.node_id, "saw": sorted(ctx.outputs)}

    runner = make_runner(
        {"work": work},
        chain("order", *({"id": n, "uses": "work"} for n in ("price", "charge", "ship"))),
    )
    run = runner.run("order", {})
    assert run["status"] == "failed" and "declined" in run["error"]
    broken.clear()
    assert runner.retry(run["run_id"]) == 2
    run = runner.result(run["run_id"])
    assert run["status"] == "completed" and run["attempt"] == 2
    assert calls == Counter({"price": 1, "charge": 2, "ship": 1})
    assert run["nodes"]["ship"]["output"]["saw"] == ["charge", "price"]
    with pytest.raises(RetryError, match="has no node 'nope'"):
        runner.retry(run["run_id"], "nope")
    # A completed run retried from a node re-runs it and what follows only.
    runner.retry(run["run_id"], "ship")
    assert calls["ship"] == 2 and calls["price"] == 1
    assert runner.result(run["run_id"])["attempt"] == 3


def test_a_failed_branch_of_an_all_join_is_retried_and_the_join_fires_once() -> None:
    calls: Counter[str] = Counter()
    broken = {"b"}

    def work(ctx: NodeContext) -> str:
        calls[ctx.node_id] += 1
        if ctx.node_id in broken:
            raise NodeError("down", retryable=False)
        return ctx.node_id

    nodes = [{"id": n, "uses": "work"} for n in ("start", "a", "b", "c")]
    nodes.append({"id": "join", "uses": "work", "config": {"joinStrategy": "all"}})
    edges = [
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
        ("a", "join"),
        ("b", "join"),
        ("c", "join"),
    ]
    runner = make_runner({"work": work}, chain("fan", *nodes, edges=edges))
    run = runner.run("fan", {})
    assert run["status"] == "failed"
    broken.clear()
    runner.retry(run["run_id"], "b")
    run = runner.result(run["run_id"])
    assert run["status"] == "completed", run
    assert calls["join"] == 1 and calls["a"] == 1 and calls["b"] == 2
    assert [h["kind"] for h in runner.history(run["run_id"])].count("join.fired") == 1


def test_a_cancelled_run_is_retried_from_what_the_cancel_stopped_and_a_skip_is_refused() -> None:
    def work(ctx: NodeContext) -> str:
        return ctx.node_id

    runner = make_runner(
        {"work": work},
        {
            "id": "wait",
            "nodes": [
                {"id": "first", "uses": "work"},
                {"id": "gate", "uses": "wait", "params": {"event": "go"}},
                {"id": "last", "uses": "work"},
            ],
            "edges": [{"source": "first", "target": "gate"}, {"source": "gate", "target": "last"}],
        },
    )
    run_id = runner.start("wait", {})
    assert runner.result(run_id)["status"] == "waiting"
    assert runner.pause(run_id) and runner.result(run_id)["status"] == "paused"
    assert runner.resume(run_id) and runner.result(run_id)["status"] == "waiting"
    runner.cancel(run_id)
    runner.retry(run_id)  # from gate, which the cancel stopped
    assert runner.result(run_id)["status"] == "waiting"
    assert runner.result(run_id)["nodes"]["gate"]["waits"]["event"] == "go"
    runner.signal(run_id, "go")
    assert runner.result(run_id)["status"] == "completed"


def test_pause_holds_dispatched_nodes_until_resume() -> None:
    calls: Counter[str] = Counter()

    def work(ctx: NodeContext) -> str:
        calls[ctx.node_id] += 1
        return ctx.node_id

    runner = make_runner(
        {"work": work}, chain("two", {"id": "x", "uses": "work"}, {"id": "y", "uses": "work"})
    )
    # Start it without draining, so the pause lands before its first node runs.
    _, run = start_run(runner.rt, runner.rt.blueprints.get("two"), {})
    assert pause_run(runner.rt, run.run_id)
    runner.drain()
    assert calls == Counter() and runner.result(run.run_id)["nodes"]["x"]["status"] == "pending"
    assert runner.resume(run.run_id)
    assert runner.result(run.run_id)["status"] == "completed" and calls == Counter({"x": 1, "y": 1})


def test_a_subflow_node_retried_runs_a_new_child_and_loops_and_batches_are_refused() -> None:
    broken = {"inner"}

    def inner(ctx: NodeContext) -> str:
        if ctx.node_id in broken:
            raise NodeError("child down", retryable=False)
        return "fixed"

    runner = make_runner(
        {"inner": inner, "echo": lambda ctx: ctx.input},
        chain(
            "parent",
            {"id": "start", "uses": "echo"},
            {"id": "sub", "uses": "subflow", "params": {"blueprintId": "child"}},
        ),
        chain("child", {"id": "inner", "uses": "inner"}),
        {
            "id": "batchy",
            "nodes": [
                {"id": "xs", "uses": "echo"},
                {
                    "id": "s",
                    "uses": "batch-scatter",
                    "inputs": "xs",
                    "params": {"workerUsesKey": "echo", "outputKey": "ys", "gatherNodeId": "g"},
                },
                {
                    "id": "g",
                    "uses": "batch-gather",
                    "params": {"outputKey": "ys", "gatherNodeId": "g"},
                    "config": {"joinStrategy": "all"},
                },
                {"id": "after", "uses": "inner"},
            ],
            "edges": [
                {"source": "xs", "target": "s"},
                {"source": "s", "target": "g"},
                {"source": "g", "target": "after"},
            ],
        },
    )
    run = runner.run("parent", {})
    assert run["status"] == "failed", run
    first_child = run["nodes"]["sub"]
    broken.clear()
    assert runner.retry(run["run_id"], "sub") == 2
    run = runner.result(run["run_id"])
    assert run["status"] == "completed", run
    assert run["nodes"]["sub"]["output"] == "fixed", (first_child, run["nodes"]["sub"])

    broken.add("after")  # the node after the batch: node id "after", function inner
    batch = runner.run("batchy", [1, 2])
    assert batch["status"] == "failed", batch
    broken.clear()
    with pytest.raises(RetryError, match="part of a batch"):
        runner.retry(batch["run_id"], "s")
    assert runner.retry(batch["run_id"]) == 2, "from the failed node after the batch: allowed"
    assert runner.result(batch["run_id"])["status"] == "completed"
