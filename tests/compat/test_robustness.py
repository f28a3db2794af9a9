"""flowcraft ``packages/core/test/security.test.ts``, ``test/fuzz.test.ts`` and
``test/runtime/traverser.test.ts``: odd blueprints, values and failures, on flowbridge."""

from __future__ import annotations

from typing import Any

import pytest

from flowbridge import NodeContext
from tasks.errors import BlueprintError
from tests.compat.helpers import boom, bp, e, echo, n, out, run, value


@pytest.mark.differs("cycles without a loop-controller")
def test_a_self_loop_is_refused() -> None:
    """security.test.ts > self-loop ``loop -> loop`` (flowcraft runs it once)."""
    with pytest.raises(BlueprintError, match="self-loop"):
        run({"loop": value(1)}, bp("self", [n("loop")], [e("loop", "loop")]))


def test_a_large_context_value() -> None:
    """security.test.ts > a node sets a 10,000 x 1 KB array in the context."""

    def big(ctx: NodeContext) -> int:
        ctx.context.set("big", ["x" * 1024] * 10_000)
        return 1

    result = run({"A": big}, bp("big", [n("A")]))
    assert result["status"] == "completed"
    assert len(result["context"]["big"]) == 10_000


@pytest.mark.differs("error messages")
def test_errors_name_the_node_and_keep_the_reason() -> None:
    """security.test.ts > a thrown Error with a custom stack / an error message with sensitive
    text: flowcraft's ``errors[0].message`` is the wrapper ``Node 'fail' execution failed``
    (the cause hidden); flowbridge's says the node, the attempts and the exception's message
    (never its stack), since that is what an operator needs."""
    result = run({"fail": boom("something went wrong")}, bp("err", [n("fail")]))
    [error] = result["errors"]
    assert error["node"] == "fail"
    assert (
        error["message"]
        == "node 'fail' failed after 1 attempt(s): RuntimeError: something went wrong"
    )
    assert "Traceback" not in error["message"]


@pytest.mark.differs("validation")
@pytest.mark.parametrize(
    "broken",
    [
        {"id": "b", "nodes": None, "edges": [{"source": "a", "target": "b"}]},
        {"id": "b", "nodes": [{"uses": "u"}]},
        {"id": "b", "nodes": [{"id": "a"}]},
        {"id": "b", "nodes": [{"id": "a", "uses": "u", "config": "invalid"}]},
        {"id": "b", "nodes": {"a": {"id": "a", "uses": "u"}}},
        {"id": "b", "nodes": [{"id": "a", "uses": "u"}], "edges": [{"from": "a", "to": "a"}]},
    ],
    ids=["nodes-null", "no-id", "no-uses", "config-string", "nodes-object", "from-to"],
)
def test_invalid_blueprints_are_refused(broken: dict[str, Any]) -> None:
    """security.test.ts > invalid blueprints; fuzz.test.ts > malformed blueprints (flowcraft
    runs them to completed or failed; flowbridge refuses them when they are loaded)."""
    with pytest.raises(BlueprintError):
        run({"u": value(1)}, broken)


@pytest.mark.differs("outputs and context values are JSON")
def test_a_circular_value_fails_the_node() -> None:
    """security.test.ts > circular object in context (flowcraft's serializer marks it;
    flowbridge stores JSON, so the node fails, not retried, saying why)."""

    def circular(ctx: NodeContext) -> int:
        loop: dict[str, Any] = {}
        loop["self"] = loop
        ctx.context.set("loop", loop)
        return 1

    result = run({"A": circular}, bp("circ", [n("A")]))
    assert result["status"] == "failed"
    assert "context writes is not JSON-serializable" in result["error"]
    assert result["nodes"]["A"]["attempts"] == 1


@pytest.mark.differs("validation")
@pytest.mark.parametrize("expr", ["input.map(x => x)", "input[", "__proto__", "(("])
def test_malformed_transforms_and_conditions_are_refused(expr: str) -> None:
    """fuzz.test.ts > malformed transforms / malformed conditions (flowcraft evaluates them to
    undefined at run time; flowbridge refuses them when the blueprint is loaded)."""
    for key in ("transform", "condition"):
        with pytest.raises(BlueprintError):
            run(
                {"source": value(1), "t": echo()},
                bp("fz", [n("source"), n("t")], [e("source", "t", **{key: expr})]),
            )


@pytest.mark.differs("context writes of parallel nodes")
def test_parallel_racers_count_with_keys_of_their_own() -> None:
    """fuzz.test.ts > 10 racers increment ``shared_counter``: flowcraft counts 10 because its
    nodes share one thread; flowbridge's run on many workers, and a context key is last write
    wins, so each racer writes a key of its own and a join adds them up."""
    racers = [f"racer{i}" for i in range(10)]

    def race(ctx: NodeContext) -> int:
        ctx.context.set(f"count:{ctx.node_id}", 1)
        return 1

    def total(ctx: NodeContext) -> int:
        return sum(ctx.context.get(f"count:{r}") for r in racers)

    result = run(
        {**dict.fromkeys(racers, race), "total": total},
        bp("race", [*[n(r) for r in racers], n("total")], [e(r, "total") for r in racers]),
    )
    assert out(result, "total") == 10


def test_a_large_output_reaches_its_consumer() -> None:
    """fuzz.test.ts > a 10,000-element output passed to a consumer."""
    result = run(
        {
            "large-data-producer": value(list(range(10_000))),
            "large-data-consumer": lambda ctx: len(ctx.input),
        },
        bp(
            "large",
            [n("large-data-producer"), n("large-data-consumer")],
            [e("large-data-producer", "large-data-consumer")],
        ),
    )
    assert out(result, "large-data-consumer") == 10_000


def test_a_deep_object_and_unicode() -> None:
    """fuzz.test.ts > a 50-deep object / Unicode strings."""
    deep: dict[str, Any] = {"leaf": "🌳 naïve 日本"}
    for i in range(50):
        deep = {f"l{i}": deep}
    result = run({"A": value(deep), "B": echo()}, bp("deep", [n("A"), n("B")], [e("A", "B")]))
    assert out(result, "B") == deep


def test_a_loop_controller_needs_a_continue_edge() -> None:
    """traverser.test.ts > loop-controller without continue edge throws ``Loop 'loop' has no
    continue edge to start node`` (flowbridge: when the blueprint is loaded)."""
    with pytest.raises(BlueprintError, match="has no 'continue' edge"):
        run(
            {"a": value(1)},
            bp(
                "noloop",
                [n("a"), n("loop", "loop-controller", params={"condition": "true"}), n("b", "a")],
                [e("a", "loop"), e("loop", "b", action="break")],
            ),
        )


def test_a_fallback_target_is_not_a_start_node() -> None:
    """traverser.test.ts > fallback ids (``config.fallback: 'B'``: B is not started)."""
    result = run(
        {"A": value("a"), "B": value("b")}, bp("fb", [n("A", config={"fallback": "B"}), n("B")])
    )
    assert result["status"] == "completed"
    assert "B" not in result["nodes"]


def test_a_node_is_not_run_twice() -> None:
    """traverser.test.ts > a node is not returned twice (a diamond runs its join once)."""
    from collections import Counter

    calls: Counter[str] = Counter()
    result = run(
        {"s": value(1), "l": value(2), "r": value(3), "j": value(4, calls=calls)},
        bp(
            "diamond",
            [n("s"), n("l"), n("r"), n("j")],
            [e("s", "l"), e("s", "r"), e("l", "j"), e("r", "j")],
        ),
    )
    assert result["status"] == "completed"
    assert calls["j"] == 1
