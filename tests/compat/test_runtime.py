"""flowcraft ``packages/core/test/runtime.test.ts``, ``describe('Flowcraft Runtime - Integration
Tests')`` and ``describe('resolveNodeInput dotted property resolution')``, on flowbridge."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest

from flowbridge import NodeContext, Result
from tasks.engine import cancel_run
from tasks.errors import BlueprintError
from tests.compat.helpers import boom, bp, e, echo, n, out, ran, run, runner, value


def test_simple_linear_blueprint() -> None:
    """runtime.test.ts > should execute a simple linear blueprint."""
    result = run(
        {"A": value("resultA"), "B": lambda ctx: f"{ctx.input}_B"},
        bp("linear", [n("A"), n("B")], [e("A", "B")]),
    )
    assert result["status"] == "completed"
    assert out(result, "B") == "resultA_B"


def test_dag_with_fan_out_and_fan_in() -> None:
    """runtime.test.ts > should correctly traverse a DAG with fan-out and fan-in.

    D gets the output of the predecessor processed last: the one that completed
    last, and of those that completed together the last declared (C).
    """
    result = run(
        {
            "A": value("A"),
            "B": value("B"),
            "C": value("C"),
            "D": lambda ctx: f"input was {ctx.input}",
        },
        bp("dag", [n("A"), n("B"), n("C"), n("D")], [e("A", "D"), e("B", "D"), e("C", "D")]),
    )
    assert result["status"] == "completed"
    assert out(result, "D") == "input was C"


def test_a_failed_branch_of_a_fan_in_fails_the_run() -> None:
    """runtime.test.ts > should fail the workflow if a branch fails in a fan-in scenario."""
    result = run(
        {"A": value("A"), "B": boom(), "C": value("C"), "D": value("D")},
        bp("dag", [n("A"), n("B"), n("C"), n("D")], [e("A", "D"), e("B", "D"), e("C", "D")]),
    )
    assert result["status"] == "failed"
    assert "B" in {err["node"] for err in result["errors"]}
    assert out(result, "D") is None


def test_multiple_start_nodes() -> None:
    """runtime.test.ts > should handle a blueprint with multiple start nodes."""
    result = run(
        {"A": value("A"), "B": value("B"), "C": lambda ctx: f"input was {ctx.input}"},
        bp("starts", [n("A"), n("B"), n("C")], [e("A", "C"), e("B", "C")]),
    )
    assert result["status"] == "completed"
    assert out(result, "C") == "input was B"


@pytest.mark.differs("cycles without a loop-controller")
def test_a_cycle_without_strict_mode() -> None:
    """runtime.test.ts > should correctly execute a graph with a cycle when strict mode is off.

    Differs on purpose: flowcraft runs ``A -> B -> A`` once each; flowbridge refuses
    a cycle that does not go through a loop-controller (it would run a node twice
    in one iteration), naming the path.
    """
    with pytest.raises(BlueprintError, match="cycle A -> B -> A"):
        run({"A": value(1), "B": value(2)}, bp("cyc", [n("A"), n("B")], [e("A", "B"), e("B", "A")]))


def test_a_cycle_with_strict_mode_is_refused() -> None:
    """runtime.test.ts > should throw an error on a graph with a cycle when strict mode is on."""
    with pytest.raises(BlueprintError, match="cycle"):
        run({"A": value(1), "B": value(2)}, bp("cyc", [n("A"), n("B")], [e("A", "B"), e("B", "A")]))


def _counter_loop(calls: Counter[str], limit: str) -> dict[str, Any]:
    def start(ctx: NodeContext) -> int:
        ctx.context.set("counter", 0)
        return 0

    def body(ctx: NodeContext) -> str:
        calls["loopBody"] += 1
        count = ctx.context.get("counter") + 1
        ctx.context.set("counter", count)
        return f"iteration_{count}"

    return {"start": start, "loopBody": body, "end": value("finished"), "limit": limit}


def test_a_loop_breaks_when_its_condition_fails(calls: Counter[str]) -> None:
    """runtime.test.ts > should correctly break out of a loop when the condition is met."""
    nodes = _counter_loop(calls, "counter < 2")
    blueprint = bp(
        "loop",
        [
            n("start"),
            n(
                "mainLoop",
                "loop-controller",
                params={"condition": "counter < 2"},
                config={"joinStrategy": "any"},
            ),
            n("loopBody"),
            n("end"),
        ],
        [
            e("mainLoop", "end", action="break", transform='context["loopBody"]'),
            e("loopBody", "mainLoop"),
            e("mainLoop", "loopBody", action="continue", transform='context["loopBody"]'),
            e("start", "mainLoop"),
        ],
    )
    del nodes["limit"]
    result = run(nodes, blueprint)
    assert result["status"] == "completed", result
    assert calls["loopBody"] == 2
    assert result["context"]["counter"] == 2
    assert out(result, "end") == "finished"
    body = [p["output"] for p in result["iterations"]["loopBody"]]
    assert body == ["iteration_1", "iteration_2"], "each pass is kept as an iteration"


def test_a_loop_of_several_nodes(calls: Counter[str]) -> None:
    """runtime.test.ts > should correctly execute a loop involving multiple nodes."""

    def start(ctx: NodeContext) -> str:
        ctx.context.set("counter", 0)
        return "s"

    def middle(ctx: NodeContext) -> str:
        calls["loopBody2"] += 1
        ctx.context.set("counter", ctx.context.get("counter") + 1)
        return "m"

    nodes = {
        "start": start,
        "branchBeforeLoop": value("b", calls=calls),
        "loopBody": value(1),
        "loopBody2": middle,
        "loopBody3": value(3),
        "end": value("end"),
    }
    blueprint = bp(
        "loop3",
        [
            n("start"),
            n("branchBeforeLoop"),
            n("mainLoop", "loop-controller", params={"condition": "counter < 3"}),
            n("loopBody"),
            n("loopBody2"),
            n("loopBody3"),
            n("end"),
        ],
        [
            e("start", "mainLoop"),
            e("start", "branchBeforeLoop"),
            e("mainLoop", "loopBody", action="continue"),
            e("loopBody", "loopBody2"),
            e("loopBody2", "loopBody3"),
            e("loopBody3", "mainLoop"),
            e("mainLoop", "end", action="break"),
        ],
    )
    result = run(nodes, blueprint)
    assert result["status"] == "completed", result
    assert calls["loopBody2"] == 3
    assert calls["branchBeforeLoop"] == 1


def test_a_loop_controller_takes_a_conditional_exit_first(calls: Counter[str]) -> None:
    """runtime.test.ts > should evaluate conditional edges from loop controller on each
    iteration."""

    def start(ctx: NodeContext) -> int:
        ctx.context.set("counter", 0)
        return 0

    def body(ctx: NodeContext) -> int:
        ctx.context.set("counter", ctx.context.get("counter") + 1)
        return ctx.context.get("counter")

    nodes = {
        "start": start,
        "body": body,
        "specialExit": value("special", calls=calls),
        "end": value("end", calls=calls),
    }
    blueprint = bp(
        "exit",
        [
            n("start"),
            n("myLoop", "loop-controller", params={"condition": "counter < 10"}),
            n("body"),
            n("specialExit"),
            n("end"),
        ],
        [
            e("start", "myLoop"),
            e("myLoop", "body", action="continue"),
            e("body", "myLoop"),
            e("myLoop", "specialExit", action="break", condition="counter === 5"),
            e("myLoop", "end", action="break"),
        ],
    )
    result = run(nodes, blueprint)
    assert result["status"] == "completed", result
    assert calls["specialExit"] == 1
    assert calls["end"] == 0
    assert result["context"]["counter"] == 5


def test_a_fallback_runs_when_the_main_node_fails() -> None:
    """runtime.test.ts > should execute fallback node when main node fails.

    flowbridge also lists A's failure in ``errors`` (flowcraft records none).
    """
    result = run(
        {"A": boom(), "B": value("fallback success")},
        bp("fb", [n("A", config={"fallback": "B"}), n("B")]),
    )
    assert result["status"] == "completed", result
    assert out(result, "B") == "fallback success"
    assert [err["node"] for err in result["errors"]] == ["A"]


def test_retries_then_the_fallback(calls: Counter[str]) -> None:
    """runtime.test.ts > should retry a node and execute fallback after max retries exceeded."""
    result = run(
        {
            "start": value("start"),
            "failingNode": boom(calls=calls),
            "fallbackNode": value("fallback-success", calls=calls),
            "endNode": lambda ctx: f"end-with-{ctx.input}",
        },
        bp(
            "retry-fb",
            [
                n("start"),
                n("failingNode", config={"maxRetries": 3, "fallback": "fallbackNode"}),
                n("fallbackNode"),
                n("endNode"),
            ],
            [e("start", "failingNode"), e("failingNode", "endNode")],
        ),
    )
    assert result["status"] == "completed", result
    assert calls["failingNode"] == 3, "maxRetries counts attempts in total"
    assert calls["fallbackNode"] == 1
    assert out(result, "endNode") == "end-with-fallback-success"


def test_parallel_start_nodes_are_all_dispatched_at_once() -> None:
    """runtime.test.ts > should allow unlimited concurrency when not specified.

    Ported as what a blueprint decides: all four independent start nodes are sent
    to the queue together; how many run at once is the workers' concurrency.
    """
    r = runner({k: value(k) for k in "ABCD"}, bp("par", [n(k) for k in "ABCD"]))
    run_id = r.start("par", {}, drain=False)
    assert {n: v["status"] for n, v in r.result(run_id)["nodes"].items()} == dict.fromkeys(
        "ABCD", "pending"
    )
    assert len(r.port.queue) == 4
    r.drain()
    assert r.result(run_id)["status"] == "completed"


def test_conditional_edges_and_context() -> None:
    """runtime.test.ts > should execute a flow with conditional edges and context."""

    def a(ctx: NodeContext) -> str:
        ctx.context.set("shared_value", 42)
        return "start"

    result = run(
        {
            "A": a,
            "B": value(True, "path-c"),
            "C": lambda ctx: f"C received {ctx.context.get('shared_value')}",
            "D": value("D"),
        },
        bp(
            "ctx",
            [n("A"), n("B"), n("C"), n("D")],
            [e("A", "B"), e("B", "C", action="path-c"), e("B", "D", action="path-d")],
        ),
    )
    assert out(result, "C") == "C received 42"
    assert out(result, "D") is None
    assert result["context"]["shared_value"] == 42


def test_a_node_s_output_is_saved_under_its_id() -> None:
    """runtime.test.ts > should automatically save a node's output to the context using its ID."""
    result = run({"A": value("test")}, bp("one", [n("A")]))
    assert out(result, "A") == "test"


def test_a_string_inputs_mapping() -> None:
    """runtime.test.ts > should correctly resolve a simple string `inputs` mapping."""
    result = run(
        {"A": value("data"), "B": lambda ctx: f"{ctx.input}_B"},
        bp("map", [n("A"), n("B", inputs="A")], [e("A", "B")]),
    )
    assert out(result, "B") == "data_B"


def test_an_object_inputs_mapping() -> None:
    """runtime.test.ts > should correctly resolve a complex object `inputs` mapping."""
    result = run(
        {"A": value({"key": "value"}), "B": lambda ctx: f"{ctx.input['data']['key']}_B"},
        bp("map", [n("A"), n("B", inputs={"data": "A"})], [e("A", "B")]),
    )
    assert out(result, "B") == "value_B"


def test_the_single_predecessor_s_output_is_the_input() -> None:
    """runtime.test.ts > should use the single-predecessor output as `input` if no mapping is
    provided."""
    result = run(
        {"A": value("data"), "B": lambda ctx: f"{ctx.input}_B"},
        bp("single", [n("A"), n("B")], [e("A", "B")]),
    )
    assert out(result, "B") == "data_B"


def test_an_edge_transform() -> None:
    """runtime.test.ts > should apply an edge `transform` expression to the data flow."""
    result = run(
        {"A": value(10), "B": echo()},
        bp("transform", [n("A"), n("B")], [e("A", "B", transform="input * 2")]),
    )
    assert out(result, "B") == 20


def test_a_transform_reads_the_inputs_node_not_the_edge_source() -> None:
    """runtime.test.ts > should apply edge transform to the inputs-referenced node output, not
    the edge source."""
    result = run(
        {
            "start": value({"deeply": {"nested": {"value": "extracted"}}}),
            "middle": value("pass-through"),
            "end": echo(),
        },
        bp(
            "t2",
            [n("start"), n("middle"), n("end", inputs="start")],
            [e("start", "middle"), e("middle", "end", transform="input.deeply.nested.value")],
        ),
    )
    assert out(result, "end") == "extracted"


def test_a_transform_on_a_direct_edge() -> None:
    """runtime.test.ts > should still respect edge transform with PropertyEvaluator on direct
    edges."""
    result = run(
        {"start": value({"deeply": {"nested": {"value": "extracted"}}}), "end": echo()},
        bp(
            "t3", [n("start"), n("end")], [e("start", "end", transform="input.deeply.nested.value")]
        ),
    )
    assert out(result, "end") == "extracted"


def test_a_transform_with_explicit_inputs() -> None:
    """runtime.test.ts > should store transformed value in _inputs when edge has transform and
    target has explicit inputs."""
    result = run(
        {"A": value({"data": 42}), "B": value("B-result"), "C": echo()},
        bp(
            "t4",
            [n("A"), n("B"), n("C", inputs="A")],
            [e("A", "B"), e("B", "C", transform="input.data")],
        ),
    )
    assert out(result, "C") == 42


def test_an_empty_output_is_a_valid_output() -> None:
    """runtime.test.ts > should handle "undefined" as a valid node output and save it to the
    context (``None`` is JSON's undefined)."""
    result = run({"A": value(None)}, bp("none", [n("A")]))
    assert result["status"] == "completed"
    assert result["nodes"]["A"] == {
        "status": "completed",
        "attempts": 1,
        "output": None,
        "error": None,
    }


def test_several_predecessors_without_a_mapping_still_give_an_input() -> None:
    """runtime.test.ts > should not have input for a node with multiple predecessors and no
    explicit "inputs" mapping (flowcraft's assertion: it has one)."""
    result = run(
        {
            "A": value("a"),
            "B": value("b"),
            "C": lambda ctx: "no-input" if ctx.input is None else "had-input",
        },
        bp("multi", [n("A"), n("B"), n("C")], [e("A", "C"), e("B", "C")]),
    )
    assert out(result, "C") == "had-input"


def test_an_edge_chosen_by_action() -> None:
    """runtime.test.ts > should follow an edge based on the returned `action`."""
    result = run(
        {"A": value("A", "success"), "B": value("B"), "C": value("C")},
        bp(
            "act",
            [n("A"), n("B"), n("C")],
            [e("A", "B", action="success"), e("A", "C", action="fail")],
        ),
    )
    assert out(result, "B") == "B"
    assert out(result, "C") is None


def test_a_true_condition_is_followed() -> None:
    """runtime.test.ts > should evaluate an edge `condition` and route correctly if true."""
    result = run(
        {"A": value({"status": "OK"}), "B": value("B"), "C": value("C")},
        bp(
            "cond",
            [n("A"), n("B"), n("C")],
            [
                e("A", "B", condition="result.output.status === 'OK'"),
                e("A", "C", condition="result.output.status === 'ERROR'"),
            ],
        ),
    )
    assert ran(result) == {"A", "B"}


def test_a_false_condition_is_not_followed() -> None:
    """runtime.test.ts > should not follow a conditional edge if the condition is false."""
    result = run(
        {"A": value("A"), "B": value("B"), "C": value("C")},
        bp("cond", [n("A"), n("B"), n("C")], [e("A", "B", condition="1 === 2"), e("A", "C")]),
    )
    assert out(result, "B") is None
    assert out(result, "C") == "C"


def test_the_default_edge_when_no_action_matches() -> None:
    """runtime.test.ts > should follow the default (unconditional) edge if no other paths
    match."""
    result = run(
        {"A": value("A", "unknown"), "B": value("B"), "C": value("C")},
        bp("dflt", [n("A"), n("B"), n("C")], [e("A", "B", action="known"), e("A", "C")]),
    )
    assert out(result, "B") is None
    assert out(result, "C") == "C"


def _route(calls: Counter[str], manager: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    def route(ctx: NodeContext) -> dict[str, int]:
        ctx.context.set("total", 1665)
        return {"total": 1665}

    nodes = {
        "route": route,
        "autoApprove": value({"status": "approved"}, calls=calls),
        "waitManager": value({"status": "pending"}, calls=calls),
        "reject": value({"status": "rejected"}, calls=calls),
        "processApproval": lambda ctx: {
            "status": "approved" if (ctx.input or {}).get("approved") else "denied"
        },
    }
    blueprint = bp(
        "route",
        [n("route"), n("autoApprove"), manager, n("reject"), n("processApproval")],
        [
            e("route", "autoApprove", condition="route.total < 500"),
            e("route", "waitManager", condition="route.total >= 500 && route.total <= 2000"),
            e("route", "reject", condition="route.total > 2000"),
            e("waitManager", "processApproval"),
        ],
    )
    return nodes, blueprint


def test_mutually_exclusive_conditions_read_a_node_by_its_id(calls: Counter[str]) -> None:
    """runtime.test.ts > should only follow ONE conditional edge when multiple conditions are
    mutually exclusive."""
    nodes, blueprint = _route(calls, n("waitManager"))
    result = run(nodes, blueprint)
    assert result["status"] == "completed"
    assert (calls["autoApprove"], calls["waitManager"], calls["reject"]) == (0, 1, 0)
    assert out(result, "waitManager") == {"status": "pending"}


def test_the_matching_edge_after_resuming_a_wait(calls: Counter[str]) -> None:
    """runtime.test.ts > should only follow the matching conditional edge after resuming from a
    .wait() node."""
    nodes, blueprint = _route(calls, n("waitManager", "wait"))
    r = runner(nodes, blueprint)
    first = r.run("route", {})
    assert first["status"] == "waiting"
    assert first["nodes"]["waitManager"]["status"] == "waiting"
    assert calls["autoApprove"] == calls["reject"] == 0
    assert r.resume(first["run_id"], "waitManager", output={"approved": True}) == "matched"
    done = r.result(first["run_id"])
    assert done["status"] == "completed"
    assert out(done, "processApproval") == {"status": "approved"}
    assert calls["autoApprove"] == calls["reject"] == 0


def test_a_run_cancelled_mid_flight() -> None:
    """runtime.test.ts > should result in a cancelled status if the signal is aborted
    mid-flight (the cancel arrives while A runs; B never runs)."""
    calls: Counter[str] = Counter()
    holder: dict[str, Any] = {}

    def a(ctx: NodeContext) -> str:
        cancel_run(holder["runner"].rt, ctx.run_id, "aborted")
        return "A"

    r = runner({"A": a, "B": value("B", calls=calls)}, bp("abort", [n("A"), n("B")], [e("A", "B")]))
    holder["runner"] = r
    result = r.run("abort", {})
    assert result["status"] == "cancelled"
    assert calls["B"] == 0
    assert result["nodes"]["A"]["status"] == "cancelled", "A's completion recorded nothing"


@pytest.mark.differs("validation")
def test_an_empty_blueprint_is_refused() -> None:
    """runtime.test.ts > should handle %s gracefully (empty blueprint; no nodes).

    Differs on purpose: flowcraft completes an empty blueprint; flowbridge refuses
    it when it is loaded (``no-nodes``). A single node with no edges completes.
    """
    with pytest.raises(BlueprintError, match="has no nodes"):
        run({}, bp("empty", []))
    assert run({"A": value(1)}, bp("one", [n("A")]))["status"] == "completed"


@pytest.mark.parametrize(
    "node_id", ["node@#$%^&*()", "节点🚀", "a" * 1000, "node.subnode", "node/sub/node"]
)
def test_unusual_node_ids(node_id: str) -> None:
    """runtime.test.ts > should handle node ID: %s (the non-blank rows)."""
    result = run({"test": value("test")}, bp("ids", [n(node_id, "test")]))
    assert result["status"] == "completed"
    assert out(result, node_id) == "test"


@pytest.mark.differs("validation")
@pytest.mark.parametrize("node_id", ["", "   "])
def test_blank_node_ids_are_refused(node_id: str) -> None:
    """runtime.test.ts > should handle node ID: %s (the blank rows; flowbridge refuses them)."""
    with pytest.raises(BlueprintError, match="id must be a non-empty string"):
        run({"test": value("test")}, bp("ids", [n(node_id, "test")]))


@pytest.mark.parametrize(
    "output",
    [
        None,
        "",
        "a" * 10_000,
        {},
        {"l1": {"l2": {"l3": {"l4": {"l5": "deep"}}}}},
        list(range(1000)),
        {"s": "x", "n": 1, "b": True, "z": None, "l": [1, "2"], "o": {"k": "v"}},
    ],
    ids=["null", "empty", "long", "object", "deep", "array", "mixed"],
)
def test_outputs_of_every_shape(output: Any) -> None:
    """runtime.test.ts > should handle %s as node output (the JSON rows)."""
    result = run({"A": value(output)}, bp("shape", [n("A")]))
    assert result["status"] == "completed"
    assert out(result, "A") == output


@pytest.mark.parametrize(
    "initial",
    [None, "", 2**53 - 1, -(2**53 - 1), [], [None] * 10],
    ids=["null", "empty", "max", "min", "array", "sparse"],
)
def test_initial_context_values(initial: Any) -> None:
    """runtime.test.ts > should handle %s as initial context value (the JSON rows)."""
    result = run(
        {"A": lambda ctx: ctx.context.get("testKey")}, bp("init", [n("A")]), {"testKey": initial}
    )
    assert result["status"] == "completed"
    assert out(result, "A") == initial


def test_a_long_chain() -> None:
    """runtime.test.ts > should handle blueprint with maximum reasonable number of nodes."""
    ids = [f"node{i}" for i in range(100)]
    result = run(
        {i: value(k) for k, i in enumerate(ids)},
        bp("chain", [n(i) for i in ids], [e(a, b) for a, b in itertools.pairwise(ids)]),
    )
    assert result["status"] == "completed"
    assert out(result, "node99") == 99


def test_complex_edge_patterns() -> None:
    """runtime.test.ts > should handle blueprint with complex edge patterns."""
    ids = [f"n{i}" for i in range(10)]
    edges = [e(ids[i], ids[j]) for i in range(10) for j in range(i + 1, 10)]
    result = run({i: value(i) for i in ids}, bp("dense", [n(i) for i in ids], edges))
    assert result["status"] == "completed"
    assert ran(result) == set(ids)


@pytest.mark.parametrize(
    "raised",
    [RuntimeError("boom"), ValueError(), KeyError("k"), Exception(42)],
    ids=["error", "empty", "key", "number"],
)
def test_a_node_that_throws(raised: Exception) -> None:
    """runtime.test.ts > should handle node that throws %s (Python raises exceptions only)."""

    def a(ctx: NodeContext) -> None:
        raise raised

    result = run({"A": a}, bp("throw", [n("A")]))
    assert result["status"] == "failed"
    assert result["errors"] and result["errors"][0]["node"] == "A"


@pytest.mark.differs("any JSON value is an output")
def test_a_plain_return_value_is_the_output() -> None:
    """runtime.test.ts > should handle node function that returns invalid result.

    Differs on purpose: flowcraft drops a return value that is not a NodeResult
    object (output undefined); in flowbridge whatever JSON value a node returns is
    its output (``Result`` adds an action).
    """
    result = run({"A": value("invalid result")}, bp("plain", [n("A")]))
    assert result["status"] == "completed"
    assert out(result, "A") == "invalid result"


@pytest.mark.parametrize(
    "stored", [None, {"a": {"b": [1, 2, {"c": None}]}}, "text", 0], ids=["null", "nested", "s", "0"]
)
def test_context_set_then_get(stored: Any) -> None:
    """runtime.test.ts > should handle context.set with %s (the JSON rows)."""

    def a(ctx: NodeContext) -> str:
        ctx.context.set("testKey", stored)
        return "a"

    result = run(
        {"A": a, "B": lambda ctx: ctx.context.get("testKey")},
        bp("set", [n("A"), n("B")], [e("A", "B")]),
    )
    assert out(result, "B") == stored


def test_dotted_paths_into_a_predecessor_s_output() -> None:
    """runtime.test.ts > resolveNodeInput dotted property resolution > should resolve dotted
    property paths from predecessor outputs."""
    result = run(
        {"createCart_1": value({"cartId": 456, "items": []}), "finalizeOrder_1": echo()},
        bp(
            "dots",
            [n("createCart_1"), n("finalizeOrder_1", inputs={"cartId": "createCart_1.cartId"})],
            [e("createCart_1", "finalizeOrder_1")],
        ),
    )
    assert out(result, "finalizeOrder_1") == {"cartId": 456}


def test_deeply_nested_dotted_paths() -> None:
    """runtime.test.ts > resolveNodeInput dotted property resolution > should resolve deeply
    nested property paths."""
    user = {"profile": {"address": {"city": "Portland"}}}
    result = run(
        {"fetchUser_1": value(user), "use": echo()},
        bp(
            "deep",
            [
                n("fetchUser_1"),
                n("use", inputs={"nestedValue": "fetchUser_1.profile.address.city"}),
            ],
            [e("fetchUser_1", "use")],
        ),
    )
    assert out(result, "use") == {"nestedValue": "Portland"}


def test_a_missing_nested_property_is_none() -> None:
    """runtime.test.ts > resolveNodeInput dotted property resolution > should return undefined
    for non-existent nested properties."""
    result = run(
        {"createCart_1": value({"cartId": 456}), "use": echo()},
        bp(
            "miss",
            [n("createCart_1"), n("use", inputs={"missing": "createCart_1.doesNotExist"})],
            [e("createCart_1", "use")],
        ),
    )
    assert out(result, "use") == {"missing": None}


def test_result_carries_the_context_and_errors() -> None:
    """runtime.test.ts (and state.test.ts) > the result's ``context`` and ``errors``: the run
    as JSON has both (``errors`` is empty, not absent, when nothing failed)."""
    result = run({"A": value(1)}, bp("r", [n("A")]), {"seed": 7})
    assert result["context"] == {"seed": 7}
    assert result["errors"] == []
    assert {"context", "errors", "status"} <= set(result)


def test_actions_with_results() -> None:
    """runtime.test.ts > should follow an edge based on the returned `action` (Result form)."""
    result = run(
        {"A": lambda ctx: Result(output={"x": 1}, action="go"), "B": echo()},
        bp("res", [n("A"), n("B")], [e("A", "B", action="go")]),
    )
    assert out(result, "B") == {"x": 1}
