"""flowcraft ``packages/core/test/runtime/sleep.test.ts`` (``describe('SleepNode duration
formats')``, ``describe('SleepNode output passthrough')``) and
``packages/core/test/runtime/hitl.test.ts`` (human in the loop: ``wait`` and resume), on
flowbridge. flowcraft's ``awaiting`` is flowbridge's ``waiting``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from flowbridge import NodeContext
from tasks.errors import BlueprintError
from tests.compat.helpers import bp, e, n, out, run, runner, value


def sleeper(duration: Any) -> dict[str, Any]:
    return bp("nap", [n("start"), n("pause", "sleep", params={"duration": duration})])


@pytest.mark.parametrize("duration", ["1m", "1h", "1d", 0], ids=["1m", "1h", "1d", "0"])
def test_sleep_duration_formats(duration: Any) -> None:
    """sleep.test.ts > SleepNode duration formats > '1m' / '1h' / '1d' / 0 (awaiting).

    A zero sleep is due at once; flowcraft still reports the run awaiting until
    resumed, flowbridge's timer fires it (the run completes when time is let run).
    """
    r = runner({"start": value("start")}, sleeper(duration))
    run_id = r.start("nap", {})
    state = r.result(run_id)
    assert state["nodes"]["pause"]["status"] in ("waiting", "completed")
    if duration != 0:
        assert state["status"] == "waiting"
    r.drain(advance=True)
    assert r.result(run_id)["status"] == "completed"


@pytest.mark.differs("validation")
@pytest.mark.parametrize("duration", ["invalid", None], ids=["invalid", "null"])
def test_invalid_sleep_durations_are_refused(duration: Any) -> None:
    """sleep.test.ts > SleepNode duration formats > 'invalid' / null (failed): flowbridge
    refuses the blueprint when it is loaded."""
    with pytest.raises(BlueprintError, match=r"params\.duration"):
        run({"start": value("s")}, sleeper(duration))


def passthrough() -> tuple[dict[str, Any], dict[str, Any]]:
    nodes = {"start": value(42), "double": lambda ctx: ctx.input * 2}
    blueprint = bp(
        "pass",
        [n("start"), n("pause", "sleep", params={"duration": 10}), n("double")],
        [e("start", "pause"), e("pause", "double")],
    )
    return nodes, blueprint


def test_a_sleep_passes_the_previous_output_through() -> None:
    """sleep.test.ts > SleepNode output passthrough > should pass through the output from the
    previous node (resumed by hand after 20 ms)."""
    nodes, blueprint = passthrough()
    r = runner(nodes, blueprint)
    run_id = r.start("pass", {})
    assert r.result(run_id)["status"] == "waiting"
    r.clock.advance(0.02)
    assert r.resume(run_id, "pause") == "matched"
    result = r.result(run_id)
    assert result["status"] == "completed"
    assert out(result, "double") == 84


def test_a_sleep_wakes_by_itself() -> None:
    """sleep.test.ts > SleepNode output passthrough > should auto-resume via WorkflowScheduler
    (flowbridge: the durable timer fires; no scheduler to start)."""
    nodes, blueprint = passthrough()
    r = runner(nodes, blueprint)
    run_id = r.start("pass", {})
    assert r.result(run_id)["status"] == "waiting"
    r.advance(timedelta(milliseconds=200))
    result = r.result(run_id)
    assert result["status"] == "completed"
    assert out(result, "double") == 84


def test_a_wait_pauses_the_run() -> None:
    """hitl.test.ts > should pause workflow at wait node (a start node without ``inputs``: its
    input is the run's, flowcraft's is undefined)."""
    seen: list[Any] = []

    def start(ctx: NodeContext) -> dict[str, Any]:
        seen.append(ctx.input)
        return {"value": ctx.input}

    result = run(
        {"start": start},
        bp("hitl", [n("start"), n("wait-for-approval", "wait")], [e("start", "wait-for-approval")]),
        {"input": 42},
    )
    assert result["status"] == "waiting"
    assert result["context"]["input"] == 42
    assert [k for k, v in result["nodes"].items() if v["status"] == "waiting"] == [
        "wait-for-approval"
    ]
    assert seen == [{"input": 42}]


def test_the_waiting_state_is_persisted() -> None:
    """hitl.test.ts > should persist awaiting state in serialized context (flowbridge: the
    store holds it; a second reader sees the same)."""
    r = runner(
        {"start": lambda ctx: {"value": ctx.input}},
        bp("hitl", [n("start"), n("wait-for-approval", "wait")], [e("start", "wait-for-approval")]),
    )
    run_id = r.start("hitl", {"input": 42})
    again = r.store.get_node(run_id, "wait-for-approval")
    assert again is not None and again.status == "waiting"
    assert r.result(run_id)["nodes"]["start"]["status"] == "completed"


def test_sequential_waits() -> None:
    """hitl.test.ts > should handle multiple sequential wait nodes."""
    r = runner(
        {
            "start": lambda ctx: {"value": ctx.input},
            "end": lambda ctx: {"final": ctx.input["value"] + 10},
        },
        bp(
            "seq",
            [
                n("start", inputs="input"),
                n("wait1", "wait"),
                n("wait2", "wait"),
                n("end", inputs="_outputs.start"),
            ],
            [e("start", "wait1"), e("wait1", "wait2"), e("wait2", "end")],
        ),
    )
    run_id = r.start("seq", {"input": 42})
    assert _waiting(r, run_id) == ["wait1"]
    r.resume(run_id, "wait1", output={"value": 42})
    assert _waiting(r, run_id) == ["wait2"]
    r.resume(run_id, "wait2")
    result = r.result(run_id)
    assert result["status"] == "completed"
    assert out(result, "end") == {"final": 52}


def _waiting(r: Any, run_id: str) -> list[str]:
    return [k for k, v in r.result(run_id)["nodes"].items() if v["status"] == "waiting"]


def test_a_wait_inside_a_subflow() -> None:
    """hitl.test.ts > should handle nested subflow with wait node.

    flowcraft resumes the parent's subflow node with an output (and only for
    ``uses: 'SubflowNode'``; with ``'subflow'`` it completes the parent without
    the child, P10). In flowbridge the child is a run of its own: resuming its
    wait finishes the child, which wakes the parent. Same final result.
    """
    sub = bp(
        "sub",
        [
            n("sub-start", inputs="input"),
            n("sub-wait", "wait"),
            n("sub-end", inputs="_outputs.sub-start"),
        ],
        [e("sub-start", "sub-wait"), e("sub-wait", "sub-end")],
    )
    main = bp(
        "main",
        [
            n("main-start", inputs="input"),
            n(
                "subflow",
                "subflow",
                params={"blueprintId": "sub", "inputs": {"input": "main-start"}},
            ),
            n("main-end"),
        ],
        [e("main-start", "subflow"), e("subflow", "main-end")],
    )
    nodes = {
        "main-start": lambda ctx: {"value": ctx.input},
        "sub-start": lambda ctx: {"value": ctx.input},
        "sub-end": lambda ctx: {"subFinal": ctx.input["value"]["value"] + 5},
        "main-end": lambda ctx: {"final": ctx.input["subFinal"] + 10},
    }
    r = runner(nodes, main, sub)
    run_id = r.start("main", {"input": 42})
    assert _waiting(r, run_id) == ["subflow"]
    [started] = [h for h in r.history(run_id) if h["kind"] == "subflow.started"]
    child = started["data"]["child"]
    assert _waiting(r, child) == ["sub-wait"]
    r.resume(child, "sub-wait", output={"value": 42})
    result = r.result(run_id)
    assert result["status"] == "completed", result
    assert out(result, "main-end") == {"final": 57}


def test_concurrent_waits() -> None:
    """hitl.test.ts > should handle multiple concurrent wait nodes."""
    nodes = {
        "start": lambda ctx: {"value": ctx.input},
        "process1": lambda ctx: {"result1": f"Branch 1: {ctx.input['value']}"},
        "process2": lambda ctx: {"result2": f"Branch 2: {ctx.input['value']}"},
        "gather": lambda ctx: {
            "combined": f"Results: {ctx.input['result1']['result1']}, {ctx.input['result2']['result2']}"
        },
    }
    blueprint = bp(
        "conc",
        [
            n("start", inputs="input"),
            n("wait1", "wait"),
            n("wait2", "wait"),
            n("process1", inputs="_outputs.start"),
            n("process2", inputs="_outputs.start"),
            n("gather", inputs={"result1": "_outputs.process1", "result2": "_outputs.process2"}),
        ],
        [
            e("start", "wait1"),
            e("start", "wait2"),
            e("wait1", "process1"),
            e("wait2", "process2"),
            e("process1", "gather"),
            e("process2", "gather"),
        ],
    )
    r = runner(nodes, blueprint)
    run_id = r.start("conc", {"input": 42})
    assert _waiting(r, run_id) == ["wait1", "wait2"]
    r.resume(run_id, "wait1")
    assert _waiting(r, run_id) == ["wait2"]
    r.resume(run_id, "wait2")
    result = r.result(run_id)
    assert result["status"] == "completed", result
    assert out(result, "gather") == {"combined": "Results: Branch 1: 42, Branch 2: 42"}


@pytest.mark.differs("resume with an action")
def test_a_resume_s_action_chooses_the_edges() -> None:
    """flowcraft docs/src/guide/hitl.md "Conditional Branching with Actions" (probe P01:
    flowcraft's ``resume`` ignores the action, so neither branch runs; flowbridge routes on
    it, as the docs say)."""
    r = runner(
        {"start": value("s"), "approve": value("yes"), "reject": value("no")},
        bp(
            "review",
            [n("start"), n("review", "wait"), n("approve"), n("reject")],
            [
                e("start", "review"),
                e("review", "approve", action="approve"),
                e("review", "reject", action="reject"),
            ],
        ),
    )
    run_id = r.start("review", {})
    r.resume(run_id, "review", output={"ok": 1}, action="approve")
    result = r.result(run_id)
    assert result["status"] == "completed"
    assert out(result, "review") == {"ok": 1}
    assert out(result, "approve") == "yes"
    assert result["nodes"]["reject"]["status"] == "skipped"
