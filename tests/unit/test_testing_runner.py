"""``flowbridge.testing.Runner``: blueprints run to completion in one process, time skipped.

No Kafka, Redis or worker: what users' own unit tests get. Each test has
registries of its own, so its nodes and blueprints never meet another test's.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from flowbridge import NodeContext, NodeError, Result
from flowbridge.testing import Runner
from tasks.blueprint import Blueprint
from tasks.registry import BlueprintRegistry, NodeRegistry

Node = Callable[[NodeContext], Any]


@pytest.fixture
def calls() -> Counter[str]:
    return Counter()


def make_runner(nodes: dict[str, Node], *blueprints: dict[str, Any]) -> Runner:
    node_registry, blueprint_registry = NodeRegistry(), BlueprintRegistry()
    for name, fn in nodes.items():
        node_registry.register(name, fn)
    for bp in blueprints:
        blueprint_registry.register(Blueprint.from_dict(bp))
    return Runner(node_registry=node_registry, blueprint_registry=blueprint_registry)


def chain(bp_id: str, *nodes: dict[str, Any], edges: list[tuple[str, str]] | None = None) -> dict:
    ids = [n["id"] for n in nodes]
    pairs = edges if edges is not None else list(itertools.pairwise(ids))
    return {
        "id": bp_id,
        "nodes": list(nodes),
        "edges": [{"source": s, "target": t} for s, t in pairs],
    }


def test_a_linear_blueprint_runs_to_completion_with_context_and_outputs(calls: Counter) -> None:
    def price(ctx: NodeContext) -> Result:
        calls["price"] += 1
        total = sum(i["price"] for i in ctx.input["items"])
        ctx.context.set("total", total)
        return Result(output={"total": total}, action="ok")

    def charge(ctx: NodeContext) -> dict:
        calls["charge"] += 1
        return {"charged": ctx.context.get("total"), "key": ctx.idempotency_key}

    runner = make_runner(
        {"price": price, "charge": charge},
        chain("order", {"id": "p", "uses": "price"}, {"id": "c", "uses": "charge"}),
    )
    run = runner.run("order", {"items": [{"price": 2}, {"price": 3}]})

    assert run["status"] == "completed", run
    assert run["output"] == {"c": {"charged": 5, "key": f"{run['run_id']}:c:0"}}
    assert calls == {"price": 1, "charge": 1}
    kinds = [e["kind"] for e in runner.history(run["run_id"])]
    assert kinds.count("node.completed") == 2
    assert [v["type"] for v in runner.emitted("flowbridge.runs")] == [
        "run.started",
        "run.completed",
    ]


def test_retries_back_off_on_the_virtual_clock_and_never_sleep(calls: Counter) -> None:
    def flaky(ctx: NodeContext) -> dict:
        calls["flaky"] += 1
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} failed")
        return {"attempt": ctx.attempt}

    runner = make_runner(
        {"flaky": flaky},
        chain("r", {"id": "f", "uses": "flaky", "config": {"maxRetries": 3, "retryDelay": 60_000}}),
    )
    before = runner.clock()
    run = runner.run("r")

    assert run["status"] == "completed"
    assert run["nodes"]["f"] == {
        "status": "completed",
        "attempts": 3,
        "output": {"attempt": 3},
        "error": None,
    }
    assert calls["flaky"] == 3
    # Backoff 60 s then 120 s: skipped on the virtual clock, not waited for.
    assert runner.clock() - before >= 180


def test_a_non_retryable_error_fails_the_run_with_its_reason() -> None:
    def refuse(ctx: NodeContext) -> None:
        raise NodeError("card declined", retryable=False)

    runner = make_runner(
        {"refuse": refuse}, chain("f", {"id": "x", "uses": "refuse", "config": {"maxRetries": 5}})
    )
    run = runner.run("f")
    assert run["status"] == "failed"
    assert "card declined" in run["error"]
    assert run["nodes"]["x"]["attempts"] == 1


def test_a_one_day_sleep_returns_at_once_on_the_virtual_clock(calls: Counter) -> None:
    def after(ctx: NodeContext) -> str:
        calls["after"] += 1
        return "woke"

    runner = make_runner(
        {"after": after},
        chain(
            "nap",
            {"id": "s", "uses": "sleep", "params": {"duration": "1d"}},
            {"id": "a", "uses": "after"},
        ),
    )
    before = runner.clock()
    run = runner.run("nap")

    assert run["status"] == "completed"
    assert run["nodes"]["s"]["output"] == {}, "a sleep passes its input on (here the run's)"
    assert 86400 <= runner.clock() - before < 86400 + 60
    assert calls["after"] == 1


def test_a_wait_comes_back_waiting_and_a_signal_completes_it() -> None:
    runner = make_runner(
        {},
        chain("approve", {"id": "w", "uses": "wait", "params": {"event": "approved"}}),
    )
    run = runner.run("approve")
    assert run["status"] == "waiting"

    assert runner.signal(run["run_id"], "approved", {"by": "ann"}, event_id="e1") == "matched"
    assert runner.signal(run["run_id"], "approved", {"by": "bob"}, event_id="e1") == "duplicate"
    done = runner.result(run["run_id"])
    assert done["status"] == "completed"
    assert done["output"] == {"w": {"by": "ann"}}


def test_a_wait_timeout_takes_the_timeout_action_when_time_is_advanced() -> None:
    def late(ctx: NodeContext) -> str:
        return "chased"

    bp = {
        "id": "chase",
        "nodes": [
            {"id": "w", "uses": "wait", "params": {"event": "paid", "timeout": "3d"}},
            {"id": "remind", "uses": "late"},
        ],
        "edges": [{"source": "w", "target": "remind", "action": "timeout"}],
    }
    runner = make_runner({"late": late}, bp)
    run_id = runner.start("chase")
    assert runner.result(run_id)["status"] == "waiting"
    runner.advance(timedelta(days=2))
    assert runner.result(run_id)["status"] == "waiting", "not due yet"
    runner.advance(timedelta(days=1, seconds=1))
    run = runner.result(run_id)
    assert run["status"] == "completed"
    assert run["nodes"]["w"]["output"] == {"timed_out": True, "event": "paid"}
    assert run["output"] == {"remind": "chased"}


def fan_out(strategy: str, **config: Any) -> dict[str, Any]:
    return {
        "id": f"fan-{strategy}",
        "nodes": [
            {"id": "fork", "uses": "echo"},
            {"id": "a", "uses": "echo"},
            {"id": "b", "uses": "slow", "config": {"maxRetries": 2}},
            {"id": "c", "uses": "boom"},
            {"id": "join", "uses": "gather", "config": {"joinStrategy": strategy, **config}},
        ],
        "edges": [{"source": "fork", "target": t} for t in ("a", "b", "c")]
        + [{"source": t, "target": "join"} for t in ("a", "b", "c")],
    }


@pytest.fixture
def fan_nodes(calls: Counter) -> dict[str, Node]:
    def echo(ctx: NodeContext) -> str:
        calls[ctx.node_id] += 1
        return ctx.node_id

    def slow(ctx: NodeContext) -> str:
        calls[ctx.node_id] += 1
        if ctx.attempt == 1:
            raise NodeError("not yet", delay=30)
        return ctx.node_id

    def boom(ctx: NodeContext) -> None:
        calls[ctx.node_id] += 1
        raise NodeError("exploded", retryable=False)

    def gather(ctx: NodeContext) -> dict:
        calls["join"] += 1
        return {p: b["outcome"] for p, b in sorted(ctx.branches.items())}

    return {"echo": echo, "slow": slow, "boom": boom, "gather": gather}


def test_all_settled_join_sees_every_branch_outcome(fan_nodes: dict, calls: Counter) -> None:
    runner = make_runner(fan_nodes, fan_out("all-settled"))
    run = runner.run("fan-all-settled")
    assert run["status"] == "completed", run
    assert run["output"] == {"join": {"a": "completed", "b": "completed", "c": "failed"}}
    assert calls["join"] == 1


def test_an_all_join_fails_fast_on_a_failed_branch(fan_nodes: dict, calls: Counter) -> None:
    runner = make_runner(fan_nodes, fan_out("all"))
    run = runner.run("fan-all")
    assert run["status"] == "failed"
    assert "node 'c' failed after 1 attempt(s): exploded" in run["error"]
    assert calls["join"] == 0


def test_a_race_fires_once_and_cancels_the_losers(fan_nodes: dict, calls: Counter) -> None:
    runner = make_runner(fan_nodes, fan_out("race"))
    run = runner.run("fan-race")
    assert run["status"] == "completed", run
    assert calls["join"] == 1
    # Tasks run in dispatch order: b and c were still queued when a won.
    assert [run["nodes"][n]["status"] for n in ("b", "c")] == ["cancelled", "cancelled"]
    assert calls["b"] == calls["c"] == 0, "revoked losers never run their code"


def test_a_fan_out_of_plain_branches_runs_as_a_chord(calls: Counter) -> None:
    def leaf(ctx: NodeContext) -> int:
        calls[ctx.node_id] += 1
        return int(ctx.params["n"])

    def total(ctx: NodeContext) -> int:
        calls["total"] += 1
        return sum(ctx.outputs[f"l{i}"] for i in range(20))

    bp = {
        "id": "wide",
        "nodes": [{"id": "start", "uses": "leaf", "params": {"n": 0}}]
        + [{"id": f"l{i}", "uses": "leaf", "params": {"n": i}} for i in range(20)]
        + [{"id": "sum", "uses": "total"}],
        "edges": [{"source": "start", "target": f"l{i}"} for i in range(20)]
        + [{"source": f"l{i}", "target": "sum"} for i in range(20)],
    }
    runner = make_runner({"leaf": leaf, "total": total}, bp)
    run = runner.run("wide")
    assert run["status"] == "completed"
    assert run["output"] == {"sum": sum(range(20))}
    assert calls["total"] == 1
    assert all(calls[f"l{i}"] == 1 for i in range(20))


def test_cancel_stops_a_waiting_run_and_nothing_after_it_runs(calls: Counter) -> None:
    def after(ctx: NodeContext) -> None:
        calls["after"] += 1

    runner = make_runner(
        {"after": after},
        chain(
            "cancel-me",
            {"id": "w", "uses": "wait", "params": {"event": "go"}},
            {"id": "a", "uses": "after"},
        ),
    )
    run_id = runner.start("cancel-me")
    assert runner.cancel(run_id, "changed my mind")
    run = runner.result(run_id)
    assert run["status"] == "cancelled"
    assert runner.signal(run_id, "go") == "finished"
    assert calls["after"] == 0


def test_a_fallback_takes_the_failed_nodes_place() -> None:
    def broken(ctx: NodeContext) -> None:
        raise RuntimeError("down")

    def backup(ctx: NodeContext) -> str:
        return "from backup"

    def ship(ctx: NodeContext) -> dict:
        return {"got": ctx.outputs["backup"]}

    bp = {
        "id": "fb",
        "nodes": [
            {"id": "main", "uses": "broken", "config": {"fallback": "backup", "maxRetries": 1}},
            {"id": "backup", "uses": "backup"},
            {"id": "ship", "uses": "ship"},
        ],
        "edges": [{"source": "main", "target": "ship"}],
    }
    runner = make_runner({"broken": broken, "backup": backup, "ship": ship}, bp)
    run = runner.run("fb")
    assert run["status"] == "completed", run
    assert run["nodes"]["main"]["status"] == "failed"
    assert run["output"] == {"ship": {"got": "from backup"}}


def test_emitted_values_are_collected_as_kafka_would_receive_them() -> None:
    def announce(ctx: NodeContext) -> None:
        ctx.emit("shop.shipments", {"run": ctx.run_id})

    runner = make_runner({"announce": announce}, chain("e", {"id": "a", "uses": "announce"}))
    run = runner.run("e")
    records = [p for p in runner.published if p.topic == "shop.shipments"]
    assert [r.value for r in records] == [{"run": run["run_id"]}]
    assert records[0].key == run["run_id"]


def test_an_unknown_node_name_is_refused_before_the_run_starts() -> None:
    runner = make_runner({}, chain("bad", {"id": "a", "uses": "nowhere"}))
    with pytest.raises(Exception, match="nowhere"):
        runner.run("bad")


def test_a_restarting_run_id_is_idempotent(calls: Counter) -> None:
    def once(ctx: NodeContext) -> None:
        calls["once"] += 1

    runner = make_runner({"once": once}, chain("idem", {"id": "a", "uses": "once"}))
    first = runner.run("idem", {"n": 1}, run_id="fixed")
    second = runner.run("idem", {"n": 1}, run_id="fixed")
    assert first["run_id"] == second["run_id"] == "fixed"
    assert calls["once"] == 1
