"""flowcraft ``packages/core/test/runtime/builtins.test.ts`` (batch, loop, subflow, wait, sleep
built-ins), on flowbridge. The blueprints are what flowcraft's builder generates for them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from flowbridge import NodeContext
from tasks.errors import BlueprintError
from tests.compat.helpers import boom, bp, e, echo, n, out, run, runner, value


def batch_blueprint(**scatter_params: Any) -> dict[str, Any]:
    """``flow.batch('test-batch', worker, {inputKey: 'prepare', outputKey: 'results'})``."""
    return bp(
        "batch",
        [
            n("prepare"),
            n(
                "test-batch_scatter",
                "batch-scatter",
                inputs="prepare",
                params={
                    "workerUsesKey": "worker",
                    "outputKey": "results",
                    "gatherNodeId": "test-batch_gather",
                    **scatter_params,
                },
            ),
            n(
                "test-batch_gather",
                "batch-gather",
                params={"outputKey": "results", "gatherNodeId": "test-batch_gather"},
                config={"joinStrategy": "all"},
            ),
            n("verify"),
        ],
        [
            e("prepare", "test-batch_scatter"),
            e("test-batch_gather", "verify"),
            e("test-batch_scatter", "test-batch_gather"),
        ],
    )


def test_batch_scatter_and_gather_with_several_items(calls: Counter[str]) -> None:
    """builtins.test.ts > should correctly execute batch-scatter and batch-gather with multiple
    items."""
    items = [{"id": i, "data": f"item{i}"} for i in (1, 2, 3)]
    seen: list[Any] = []

    def worker(ctx: NodeContext) -> str:
        calls["worker"] += 1
        return f"processed_{ctx.input['id']}_{ctx.input['data']}"

    def verify(ctx: NodeContext) -> str:
        seen.append(ctx.input)
        seen.append(ctx.context.get("results"))
        return "verified"

    r = runner({"prepare": value(items), "worker": worker, "verify": verify}, batch_blueprint())
    result = r.run("batch", {})
    expected = ["processed_1_item1", "processed_2_item2", "processed_3_item3"]
    assert result["status"] == "completed", result
    assert out(result, "verify") == "verified"
    assert calls["worker"] == 3
    assert seen == [expected, expected], "the gather's successor and the context get the list"
    assert r.batch(result["run_id"], "test-batch_gather") == expected


def test_an_empty_batch(calls: Counter[str]) -> None:
    """builtins.test.ts > should handle empty batch input array."""
    seen: list[Any] = []

    def verify(ctx: NodeContext) -> str:
        seen.append(ctx.input)
        return "verified"

    result = run(
        {"prepare": value([]), "worker": boom(calls=calls), "verify": verify}, batch_blueprint()
    )
    assert result["status"] == "completed", result
    assert out(result, "verify") == "verified"
    assert seen == [[]]
    assert calls["worker"] == 0


def test_a_failing_item_fails_the_run(calls: Counter[str]) -> None:
    """builtins.test.ts > should handle worker failures in batch."""

    def worker(ctx: NodeContext) -> str:
        calls["worker"] += 1
        if ctx.input["id"] == 2:
            raise RuntimeError("Worker failed for item 2")
        return "ok"

    result = run(
        {"prepare": value([{"id": 1}, {"id": 2}]), "worker": worker, "verify": value("v")},
        batch_blueprint(),
    )
    assert result["status"] == "failed"
    assert result["errors"], result
    assert (
        "batch item 'test-batch_scatter[1]' failed after 1 attempt(s)"
        in result["errors"][0]["message"]
    )
    assert "Worker failed for item 2" in result["errors"][0]["message"]
    assert calls["worker"] == 2
    assert out(result, "verify") is None


def test_a_scatter_input_that_is_not_a_list_fails() -> None:
    """builtins.test.ts > should throw error for non-array input in batch-scatter."""
    result = run(
        {"prepare": value("not an array"), "worker": echo(), "verify": value("v")},
        batch_blueprint(),
    )
    assert result["status"] == "failed"
    assert "must be an array" in result["error"]


def test_the_builder_s_params_are_complete() -> None:
    """builtins.test.ts > should throw error for missing params in batch-scatter (the builder
    sets them, so the run completes)."""
    result = run(
        {"prepare": value([]), "worker": echo(), "verify": value("should not reach")},
        batch_blueprint(),
    )
    assert result["status"] == "completed"
    assert out(result, "verify") == "should not reach"


@pytest.mark.differs("validation")
def test_missing_scatter_params_are_refused() -> None:
    """builtins.test.ts > should throw error for missing params in batch-scatter (a blueprint
    written without them: flowcraft fails the run, flowbridge refuses the blueprint)."""
    broken = batch_blueprint()
    del broken["nodes"][1]["params"]["workerUsesKey"]
    with pytest.raises(BlueprintError, match=r"params\.workerUsesKey is required"):
        run({"prepare": value([]), "verify": value("v")}, broken)


def _count_loop(
    body: list[dict[str, Any]], edges: list[dict[str, Any]], **loop: Any
) -> dict[str, Any]:
    return bp("loop", body, edges)


def test_a_simple_loop_exits_intuitively() -> None:
    """builtins.test.ts > should correctly exit a simple loop with an intuitive edge
    definition."""

    def initialize(ctx: NodeContext) -> int:
        ctx.context.set("count", 0)
        return 0

    def increment(ctx: NodeContext) -> int:
        count = ctx.context.get("count") + 1
        ctx.context.set("count", count)
        return count

    result = run(
        {
            "initialize": initialize,
            "increment": increment,
            "finalize": lambda ctx: f"Finalized at {ctx.context.get('count')}",
        },
        bp(
            "loop",
            [
                n("initialize"),
                n("counter", "loop-controller", params={"condition": "count < 5"}),
                n("increment"),
                n("finalize"),
            ],
            [
                e("initialize", "counter"),
                e("counter", "increment", action="continue", transform='context["increment"]'),
                e("increment", "counter"),
                e("counter", "finalize", action="break", transform='context["increment"]'),
            ],
        ),
    )
    assert result["status"] == "completed", result
    assert out(result, "finalize") == "Finalized at 5"
    assert result["context"]["count"] == 5


def test_a_loop_runs_its_iterations_and_breaks(calls: Counter[str]) -> None:
    """builtins.test.ts > should execute loop for specified iterations and break correctly."""

    def initialize(ctx: NodeContext) -> int:
        ctx.context.set("counter", 0)
        return 0

    def increment(ctx: NodeContext) -> int:
        calls["increment"] += 1
        ctx.context.set("counter", ctx.context.get("counter") + 1)
        return ctx.context.get("counter")

    result = run(
        {
            "initialize": initialize,
            "increment": increment,
            "check": echo(),
            "final": value("final"),
        },
        bp(
            "loop",
            [
                n("initialize"),
                n("test-loop", "loop-controller", params={"condition": "counter < 3"}),
                n("increment"),
                n("check"),
                n("final"),
            ],
            [
                e("initialize", "test-loop"),
                e("test-loop", "increment", action="continue"),
                e("increment", "check"),
                e("check", "test-loop"),
                e("test-loop", "final", action="break"),
            ],
        ),
    )
    assert result["status"] == "completed", result
    assert out(result, "final") == "final"
    assert calls["increment"] == 3
    assert [p["output"] for p in result["iterations"]["check"]] == [1, 2, 3]


@pytest.mark.differs("a loop that does not end")
def test_an_infinite_loop_is_stopped() -> None:
    """builtins.test.ts > should handle infinite loop prevention.

    Differs on purpose: flowcraft's ``run()`` throws "Traversal exceeded maximum
    iterations" after 10,000 rounds; flowbridge fails the run when the loop
    reaches ``params.maxIterations`` (default 1000), naming the loop and its
    condition. The graph has no start node, so it starts at its cycle (``work``).
    """
    result = run(
        {"work": value("w"), "always-true": value("t")},
        bp(
            "forever",
            [
                n("work"),
                n("always-true"),
                n(
                    "test-loop",
                    "loop-controller",
                    params={"condition": "true", "maxIterations": 25},
                ),
            ],
            [
                e("work", "always-true"),
                e("always-true", "test-loop"),
                e("test-loop", "work", action="continue"),
            ],
        ),
    )
    assert result["status"] == "failed"
    assert (
        "loop 'test-loop' reached maxIterations=25 and its condition 'true' still holds"
        in result["error"]
    )
    assert len(result["iterations"]["work"]) == 25


def subflow_registry(**extra: Any) -> dict[str, Any]:
    return {"input": lambda ctx: {"value": "test"}, "output": value("main_complete"), **extra}


def test_a_subflow_and_its_merged_context() -> None:
    """builtins.test.ts > should execute subflow and merge context correctly."""
    seen: list[Any] = []

    def output(ctx: NodeContext) -> str:
        seen.append(ctx.context.get("subflow_output"))
        return "main_complete"

    main = bp(
        "main",
        [
            n("input"),
            n(
                "test-subflow",
                "subflow",
                params={
                    "blueprintId": "subflow-test",
                    "inputs": {"input": "input"},
                    "outputs": {"subflow_output": "process"},
                },
            ),
            n("output"),
        ],
        [e("input", "test-subflow"), e("test-subflow", "output")],
    )
    sub = bp("subflow-test", [n("process", inputs="input")])
    nodes = {
        "input": lambda ctx: {"value": "test"},
        "output": output,
        "process": lambda ctx: f"processed_{ctx.input['value']}",
    }
    result = runner(nodes, main, sub).run("main", {})
    assert result["status"] == "completed", result
    assert out(result, "output") == "main_complete"
    assert seen == ["processed_test"]
    assert result["context"]["subflow_output"] == "processed_test"


def test_subflow_errors_propagate() -> None:
    """builtins.test.ts > should handle subflow errors and propagate them."""
    main = bp(
        "main",
        [
            n("input"),
            n(
                "test-subflow",
                "subflow",
                params={"blueprintId": "failing-subflow", "inputs": {"input": "input"}},
            ),
        ],
        [e("input", "test-subflow")],
    )
    sub = bp("failing-subflow", [n("fail")])
    result = runner({"input": value("test"), "fail": boom("sub broke")}, main, sub).run("main", {})
    assert result["status"] == "failed"
    message = result["errors"][0]["message"]
    assert "child run" in message and "failed" in message and "sub broke" in message


@pytest.mark.differs("validation")
def test_a_subflow_without_blueprint_id_is_refused() -> None:
    """builtins.test.ts > should throw error for missing blueprintId in subflow (flowbridge
    refuses the blueprint when it is loaded)."""
    main = bp("main", [n("s", "subflow", params={"inputs": {}})])
    with pytest.raises(BlueprintError, match=r"params\.blueprintId is required"):
        run({}, main)


def test_a_subflow_of_an_unknown_blueprint_fails() -> None:
    """builtins.test.ts > should throw error for missing subBlueprint in subflow."""
    result = run({}, bp("main", [n("s", "subflow", params={"blueprintId": "nonexistent-subflow"})]))
    assert result["status"] == "failed"
    assert "not found in the registry" in result["error"]


def test_a_wait_marks_the_run_waiting() -> None:
    """builtins.test.ts > should mark workflow as awaiting."""
    result = run(
        {"start": value("s"), "end": value("e")},
        bp("w", [n("start"), n("wait", "wait"), n("end")], [e("start", "wait"), e("wait", "end")]),
    )
    assert result["status"] == "waiting"
    assert result["nodes"]["wait"]["status"] == "waiting"


def test_a_subflow_with_several_terminals() -> None:
    """builtins.test.ts > should handle subflow with multiple terminals."""
    seen: list[Any] = []

    def output(ctx: NodeContext) -> str:
        seen.append(ctx.input)
        return "main_complete"

    main = bp(
        "main",
        [
            n("input"),
            n(
                "test-subflow",
                "subflow",
                params={"blueprintId": "multi", "inputs": {"input": "input"}},
            ),
            n("output"),
        ],
        [e("input", "test-subflow"), e("test-subflow", "output")],
    )
    sub = bp("multi", [n("term1"), n("term2")])
    nodes = {
        "input": value("x"),
        "output": output,
        "term1": value("term1"),
        "term2": value("term2"),
    }
    result = runner(nodes, main, sub).run("main", {})
    assert result["status"] == "completed", result
    assert seen == [{"term1": "term1", "term2": "term2"}]
    assert out(result, "test-subflow") == {"term1": "term1", "term2": "term2"}


def test_a_sleep_marks_the_run_waiting_on_a_timer() -> None:
    """builtins.test.ts > should mark workflow as awaiting with timer details (flowbridge: the
    run waits, the node is parked with a durable timer in the store)."""
    r = runner(
        {"start": value("s"), "end": value("e")},
        bp(
            "s",
            [n("start"), n("sleep", "sleep", params={"duration": 1000}), n("end")],
            [e("start", "sleep"), e("sleep", "end")],
        ),
    )
    run_id = r.start("s", {})
    result = r.result(run_id)
    assert result["status"] == "waiting"
    assert result["nodes"]["sleep"]["status"] == "waiting"
    timers = r.store.due_timers(now=r.clock() + 2)
    assert [(t.node_id, round(t.due_at - r.clock(), 3)) for t in timers] == [("sleep", 1.0)]


@pytest.mark.differs("validation")
@pytest.mark.parametrize("duration", [-100, "invalid"], ids=["negative", "string"])
def test_an_invalid_sleep_duration_is_refused(duration: Any) -> None:
    """builtins.test.ts > should throw error for invalid duration / should throw error for
    invalid string duration (flowcraft fails the run; flowbridge refuses the blueprint)."""
    with pytest.raises(BlueprintError, match=r"params\.duration"):
        run({}, bp("s", [n("sleep", "sleep", params={"duration": duration})]))


def test_a_string_sleep_duration() -> None:
    """builtins.test.ts > should handle string duration."""
    r = runner({}, bp("s", [n("sleep", "sleep", params={"duration": "5s"})]))
    run_id = r.start("s", {})
    assert r.result(run_id)["status"] == "waiting"
    r.drain(advance=True)
    assert r.result(run_id)["status"] == "completed"


@pytest.mark.differs("webhook")
def test_a_webhook_returns_its_url_and_a_wait_takes_the_call() -> None:
    """testing/stepper.test.ts > WebhookNode (completes at once with what the adapter's
    ``registerWebhookEndpoint(runId, 'webhook')`` gave) and ``wait`` with ``params.eventName:
    'webhook:webhook_1'`` (awaiting). flowbridge generates the URL and event itself; an HTTP
    call to the URL becomes that event, which the wait takes."""
    r = runner(
        {"after": echo()},
        bp(
            "hook",
            [
                n("webhook_1", "webhook"),
                n("wait_for_webhook", "wait", params={"eventName": "webhook:webhook_1"}),
                n("after"),
            ],
            [e("webhook_1", "wait_for_webhook"), e("wait_for_webhook", "after")],
        ),
    )
    run_id = r.start("hook", {})
    state = r.result(run_id)
    hook = out(state, "webhook_1")
    assert hook == {
        "url": f"http://localhost:8000/webhooks/{run_id}/webhook_1",
        "event": "webhook:webhook_1",
    }
    assert state["nodes"]["wait_for_webhook"]["status"] == "waiting"
    assert r.signal(run_id, hook["event"], {"body": {"paid": True}}) == "matched"
    assert out(r.result(run_id), "after") == {"body": {"paid": True}}


def test_a_lost_batch_window_is_sent_again_by_the_reconciler() -> None:
    """builtins.test.ts > batch-scatter and batch-gather (flowbridge's recovery: the item tasks
    of a window are lost with Redis; the reconciler sends the window again, once per stall)."""
    calls: Counter[str] = Counter()

    def worker(ctx: NodeContext) -> int:
        calls[str(ctx.input)] += 1
        return int(ctx.input) + 1

    r = runner({"prepare": value([1, 2, 3]), "worker": worker, "verify": echo()}, batch_blueprint())
    run_id = r.start("batch", {}, drain=False)
    r.drain()  # nothing is lost yet: the whole batch runs
    assert r.result(run_id)["status"] == "completed"

    lost = r.start("batch", {}, drain=False)
    while any(t.task is not None and t.task.item is None for t in r.port.queue):
        item = r.port.pop_due(advance=False)
        assert item is not None
        from tasks.inprocess import run_queued

        run_queued(r.port, item, r.rt)
    r.port.queue.clear()  # the window's chord is gone
    r.port.chords.clear()
    assert r.result(lost)["status"] == "running"
    r.clock.advance(r.rt.settings.stalled_after_s + 1)
    r.reconcile()
    result = r.result(lost)
    assert result["status"] == "completed", result
    assert out(result, "verify") == [2, 3, 4]
