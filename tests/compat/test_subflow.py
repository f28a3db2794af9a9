"""flowcraft ``packages/core/test/runtime/subflow.test.ts`` (``describe('SubflowNode')``), on
flowbridge: every main flow is ``start -> call-sub`` with ``call-sub`` a subflow node."""

from __future__ import annotations

from typing import Any

import pytest

from flowbridge import NodeContext
from tasks.errors import BlueprintError
from tests.compat.helpers import boom, bp, e, n, out, runner, value


def main(params: dict[str, Any], *, end: bool = False) -> dict[str, Any]:
    nodes = [n("start"), n("call-sub", "subflow", params=params)]
    edges = [e("start", "call-sub")]
    if end:
        nodes.append(n("end"))
        edges.append(e("call-sub", "end"))
    return bp("main", nodes, edges)


def test_a_subflow_returns_its_output() -> None:
    """subflow.test.ts > should execute a subflow and return output."""
    r = runner(
        {"start": value("start"), "a": value("sub-result"), "end": lambda ctx: f"end-{ctx.input}"},
        main({"blueprintId": "sub"}, end=True),
        bp("sub", [n("a")]),
    )
    result = r.run("main", {})
    assert result["status"] == "completed", result
    assert out(result, "call-sub") == "sub-result"
    assert out(result, "end") == "end-sub-result"


@pytest.mark.differs("validation")
def test_a_missing_blueprint_id_is_refused() -> None:
    """subflow.test.ts > should throw when blueprintId is missing (flowbridge refuses the
    blueprint when it is loaded)."""
    with pytest.raises(BlueprintError, match="blueprintId is required"):
        runner({"start": value("s")}, main({})).run("main", {})


def test_an_unknown_sub_blueprint_fails_the_run() -> None:
    """subflow.test.ts > should throw when sub-blueprint is not found."""
    result = runner({"start": value("s")}, main({"blueprintId": "nonexistent"})).run("main", {})
    assert result["status"] == "failed"
    assert "Sub-blueprint 'nonexistent' not found" in result["error"]


def test_inputs_are_passed_to_the_subflow() -> None:
    """subflow.test.ts > should pass inputs to subflow (the child's output asserted too)."""
    r = runner(
        {"start": value("hello"), "a": lambda ctx: f"received-{ctx.input}"},
        main({"blueprintId": "sub", "inputs": {"input": "start"}}),
        bp("sub", [n("a", inputs="input")]),
    )
    result = r.run("main", {})
    assert result["status"] == "completed", result
    assert out(result, "call-sub") == "received-hello"
    child = r.result(_child_id(r, result["run_id"]))
    assert child["parent"]["run_id"] == result["run_id"]
    assert child["context"] == {"input": "hello"}


def _child_id(r: Any, parent: str) -> str:
    [event] = [h for h in r.history(parent) if h["kind"] == "subflow.started"]
    return str(event["data"]["child"])


def test_outputs_are_passed_back_from_the_subflow() -> None:
    """subflow.test.ts > should pass outputs from subflow."""

    def a(ctx: NodeContext) -> str:
        ctx.context.set("result", "sub-value")
        return "sub-result"

    r = runner(
        {"start": value("s"), "a": a},
        main({"blueprintId": "sub", "outputs": {"subResult": "a", "fromContext": "result"}}),
        bp("sub", [n("a")]),
    )
    result = r.run("main", {})
    assert result["status"] == "completed", result
    assert result["context"]["subResult"] == "sub-result"
    assert result["context"]["fromContext"] == "sub-value"


def test_a_subflow_with_several_terminal_nodes() -> None:
    """subflow.test.ts > should handle subflow with multiple terminal nodes."""
    r = runner(
        {"start": value("s"), "a": value("a-result"), "b": value("b-result")},
        main({"blueprintId": "sub"}),
        bp("sub", [n("a"), n("b")]),
    )
    result = r.run("main", {})
    assert result["status"] == "completed"
    assert out(result, "call-sub") == {"a": "a-result", "b": "b-result"}


def test_a_failed_subflow_fails_the_run() -> None:
    """subflow.test.ts > should handle subflow failure."""
    r = runner(
        {"start": value("s"), "a": boom()}, main({"blueprintId": "sub"}), bp("sub", [n("a")])
    )
    result = r.run("main", {})
    assert result["status"] == "failed"
    assert result["nodes"]["call-sub"]["status"] == "failed"


def test_a_failed_subflow_is_retried_with_a_new_child_then_falls_back() -> None:
    """subflow.test.ts > should handle subflow failure: the failure is an ordinary node failure,
    so ``maxRetries`` and ``fallback`` apply (flowcraft's error is non-fatal)."""
    attempts: list[str] = []

    def a(ctx: NodeContext) -> str:
        attempts.append(ctx.run_id)
        raise RuntimeError("no")

    r = runner(
        {"start": value("s"), "a": a, "rescue": value("rescued"), "end": lambda ctx: ctx.input},
        bp(
            "main",
            [
                n("start"),
                n(
                    "call-sub",
                    "subflow",
                    params={"blueprintId": "sub"},
                    config={"maxRetries": 2, "fallback": "rescue"},
                ),
                n("rescue"),
                n("end"),
            ],
            [e("start", "call-sub"), e("call-sub", "end")],
        ),
        bp("sub", [n("a")]),
    )
    result = r.run("main", {})
    assert result["status"] == "completed", result
    assert len(attempts) == 2 and len(set(attempts)) == 2, "each attempt is a child run of its own"
    assert out(result, "end") == "rescued"


def test_cancelling_the_parent_cancels_the_child() -> None:
    """subflow.test.ts (cancellation: flowcraft's child shares the parent's abort signal)."""
    r = runner(
        {"start": value("s")},
        main({"blueprintId": "sub"}),
        bp("sub", [n("hold", "wait")]),
    )
    run_id = r.start("main", {})
    child = _child_id(r, run_id)
    assert r.result(child)["status"] == "waiting"
    assert r.cancel(run_id)
    assert r.result(run_id)["status"] == "cancelled"
    assert r.result(child)["status"] == "cancelled"
    assert "its parent run" in r.result(child)["error"]
