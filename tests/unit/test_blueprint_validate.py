"""Blueprint validation: every issue code, with the node or edge named in its message."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest

from tasks.blueprint import (
    BUILTIN_USES,
    Blueprint,
    EdgeSpec,
    NodeConfig,
    NodeSpec,
    ValidationIssue,
    check,
    validate,
)
from tasks.errors import BlueprintError


def bp_of(
    nodes: Sequence[NodeSpec | dict[str, Any]], edges: Sequence[tuple[str, str]] = ()
) -> Blueprint:
    """A blueprint built without parse-time checks, so invalid configs reach validate."""
    specs = tuple(
        n if isinstance(n, NodeSpec) else NodeSpec(id=n["id"], uses=n.get("uses", "u"))
        for n in nodes
    )
    return Blueprint(
        id="flow",
        nodes=specs,
        edges=tuple(EdgeSpec(source=a, target=b) for a, b in edges),
    )


def node(node_id: str, uses: str = "u", **config: Any) -> NodeSpec:
    return NodeSpec(id=node_id, uses=uses, config=NodeConfig(**config))


def only(issues: list[ValidationIssue], code: str) -> list[ValidationIssue]:
    return [i for i in issues if i.code == code]


def test_a_good_blueprint_has_no_issues() -> None:
    bp = Blueprint.build(
        "order",
        nodes=[
            {"id": "charge", "uses": "charge-card", "config": {"fallback": "manual"}},
            {"id": "manual", "uses": "review"},
            {"id": "pack", "uses": "sleep", "params": {"duration": "1h"}},
            {"id": "label", "uses": "wait"},
            {"id": "ship", "uses": "ship", "config": {"joinStrategy": "quorum", "n": 2}},
        ],
        edges=[
            {"source": "charge", "target": "pack", "condition": "output.total > 10"},
            {"source": "charge", "target": "label", "action": "ok"},
            {"source": "pack", "target": "ship"},
            {"source": "label", "target": "ship"},
        ],
    )
    assert validate(bp, known_uses={"charge-card", "review", "ship"}, max_delay_s=300) == []
    check(bp, known_uses=["charge-card", "review", "ship"])


def test_no_nodes() -> None:
    issues = validate(Blueprint(id="empty", nodes=()))
    assert [(i.code, i.message) for i in issues] == [("no-nodes", "blueprint 'empty' has no nodes")]


def test_duplicate_node() -> None:
    issues = validate(bp_of([{"id": "a"}, {"id": "a"}, {"id": "b"}], [("a", "b")]))
    dup = only(issues, "duplicate-node")
    assert len(dup) == 1
    assert dup[0].node == "a"
    assert dup[0].message == "node 'a' is declared 2 times"


def test_unknown_uses_lists_registered_names_sorted() -> None:
    bp = bp_of([node("charge", "charge-card"), node("wait", "wait")], [("charge", "wait")])
    issues = validate(bp, known_uses=["ship", "bill"])
    assert [(i.code, i.node) for i in issues] == [("unknown-uses", "charge")]
    assert issues[0].message == (
        "node 'charge': unknown uses 'charge-card' (registered: batch-gather, batch-scatter, "
        "bill, loop-controller, ship, sleep, subflow, wait, webhook)"
    )
    assert validate(bp) == []  # without known_uses the check is off
    assert (
        frozenset(
            {
                "sleep",
                "wait",
                "webhook",
                "subflow",
                "batch-scatter",
                "batch-gather",
                "loop-controller",
            }
        )
        == BUILTIN_USES
    ), "flowcraft's built-ins"


def test_dangling_edges_name_the_edge_and_the_missing_end() -> None:
    bp = bp_of([{"id": "a"}, {"id": "b"}], [("a", "b"), ("a", "ghost"), ("spook", "b")])
    issues = only(validate(bp), "dangling-edge")
    assert [i.edge for i in issues] == [("a", "ghost"), ("spook", "b")]
    assert issues[0].message == "edge 'a' -> 'ghost': target 'ghost' is not a node"
    assert issues[1].message == "edge 'spook' -> 'b': source 'spook' is not a node"


def test_self_loop() -> None:
    issues = validate(bp_of([{"id": "s"}, {"id": "a"}], [("s", "a"), ("a", "a")]))
    cycles = only(issues, "cycle")
    assert len(cycles) == 1
    assert cycles[0].node == "a"
    assert "self-loop a -> a" in cycles[0].message


def test_cycle_lists_the_path() -> None:
    bp = bp_of(
        [{"id": i} for i in ("start", "a", "b", "c", "end")],
        [("start", "a"), ("a", "b"), ("b", "c"), ("c", "a"), ("c", "end")],
    )
    cycles = only(validate(bp), "cycle")
    assert len(cycles) == 1
    assert "cycle a -> b -> c -> a" in cycles[0].message
    assert cycles[0].edge == ("a", "b")


def test_every_separate_cycle_is_reported() -> None:
    bp = bp_of(
        [{"id": i} for i in ("s", "a", "b", "x", "y")],
        [("s", "a"), ("a", "b"), ("b", "a"), ("s", "x"), ("x", "y"), ("y", "x")],
    )
    messages = [i.message for i in only(validate(bp), "cycle")]
    assert len(messages) == 2
    assert "a -> b -> a" in messages[0]
    assert "x -> y -> x" in messages[1]


def test_a_fallback_back_to_an_earlier_node_is_a_cycle() -> None:
    bp = bp_of([node("a"), node("b", fallback="a")], [("a", "b")])
    cycles = only(validate(bp), "cycle")
    assert len(cycles) == 1
    assert "a -> b -[fallback]-> a" in cycles[0].message


def test_long_chains_do_not_hit_the_recursion_limit() -> None:
    ids = [f"n{i}" for i in range(3000)]
    bp = bp_of([{"id": i} for i in ids], [*itertools.pairwise(ids), ("n2999", "n1")])
    cycles = only(validate(bp), "cycle")
    assert len(cycles) == 1
    assert cycles[0].message.count("->") == 2999


def test_a_graph_without_a_start_node_starts_at_its_cycle_as_in_flowcraft() -> None:
    bp = bp_of([{"id": "a"}, {"id": "b"}], [("a", "b"), ("b", "a")])
    assert bp.analysis.start_nodes == ("a",)
    assert [i.code for i in validate(bp)] == ["cycle"], "without a loop-controller it is refused"
    chosen = Blueprint.build(
        "flow",
        nodes=[{"id": "a", "uses": "u"}, {"id": "b", "uses": "u"}],
        edges=[{"source": "a", "target": "b"}, {"source": "b", "target": "a"}],
        metadata={"cycleEntryPoints": ["b"]},
    )
    assert chosen.analysis.start_nodes == ("b",)


def test_unreachable_nodes() -> None:
    bp = bp_of(
        [{"id": i} for i in ("start", "end", "x", "y")],
        [("start", "end"), ("x", "y"), ("y", "x")],
    )
    unreachable = only(validate(bp), "unreachable")
    assert [i.node for i in unreachable] == ["x", "y"]
    assert unreachable[0].message == "node 'x' is unreachable from the start node(s) start"


def test_fallback_target_is_reachable_only_through_a_reachable_primary() -> None:
    reachable = bp_of([node("a", fallback="rescue"), node("rescue")])
    assert validate(reachable) == []
    orphan = bp_of(
        [node("s"), node("p", fallback="rescue"), node("q"), node("rescue")],
        [("s", "q"), ("q", "p"), ("p", "q")],
    )
    issues = validate(orphan)
    assert [i.node for i in only(issues, "unreachable")] == []  # p and q reachable from s
    isolated = bp_of(
        [node("s"), node("p", fallback="rescue"), node("q"), node("rescue")],
        [("p", "q"), ("q", "p")],
    )
    assert [i.node for i in only(validate(isolated), "unreachable")] == ["p", "q", "rescue"]


@pytest.mark.parametrize(
    ("config", "code", "text"),
    [
        (
            {"max_attempts": 0},
            "bad-config",
            "node 'a': maxRetries counts attempts in total (1: no retry), so it must be at least 1, got 0",
        ),
        ({"retry_delay_s": -0.5}, "bad-config", "node 'a': retryDelay must be a non-negative"),
        ({"timeout_s": 0.0}, "bad-config", "node 'a': timeout must be positive, got 0.0s"),
        ({"timeout_s": -3.0}, "bad-config", "node 'a': timeout must be positive"),
        ({"fallback": "a"}, "bad-fallback", "node 'a': fallback 'a' is the node itself"),
        ({"fallback": "ghost"}, "bad-fallback", "node 'a': fallback 'ghost' is not a node"),
        ({"join_strategy": "most"}, "bad-join", "node 'a': unknown joinStrategy 'most'"),
        ({"join_strategy": "quorum"}, "bad-quorum", "node 'a': joinStrategy 'quorum' needs 'n'"),
        (
            {"join_strategy": "quorum", "join_options": {"n": 0}},
            "bad-quorum",
            "node 'a': quorum n must be at least 1",
        ),
        (
            {"join_options": {"n": 1}},
            "bad-quorum",
            "node 'a': 'n' is only used with joinStrategy 'quorum'",
        ),
    ],
)
def test_bad_config(config: dict[str, Any], code: str, text: str) -> None:
    bp = bp_of([node("a", **config), node("b")], [("a", "b")])
    issues = validate(bp)
    assert [i.code for i in issues] == [code]
    assert issues[0].node == "a"
    assert text in issues[0].message


def test_quorum_bounded_by_predecessors() -> None:
    nodes = [
        node("s"),
        node("l"),
        node("r"),
        node("j", join_strategy="quorum", join_options={"n": 3}),
    ]
    bp = bp_of(nodes, [("s", "l"), ("s", "r"), ("l", "j"), ("r", "j")])
    issues = validate(bp)
    assert [(i.code, i.node) for i in issues] == [("bad-quorum", "j")]
    assert "quorum n=3 is more than its 2 predecessor(s)" in issues[0].message
    nodes[-1] = node("j", join_strategy="quorum", join_options={"n": 2})
    assert validate(bp_of(nodes, [("s", "l"), ("s", "r"), ("l", "j"), ("r", "j")])) == []


@pytest.mark.parametrize("strategy", ["all", "all-settled", "any", "race"])
def test_join_strategy_on_a_node_with_one_predecessor_is_allowed(strategy: str) -> None:
    bp = bp_of([node("a"), node("b", join_strategy=strategy)], [("a", "b")])
    assert validate(bp) == []


def test_delays_at_or_over_the_limit() -> None:
    bp = bp_of(
        [node("a", retry_delay_s=300.0), node("b", timeout_s=299.0), node("c", timeout_s=600.0)],
        [("a", "b"), ("b", "c")],
    )
    assert validate(bp) == []
    issues = validate(bp, max_delay_s=300)
    assert [(i.code, i.node) for i in issues] == [("delay-too-long", "a"), ("delay-too-long", "c")]
    assert "node 'a': retryDelay 300s is not below the limit of 300s" in issues[0].message
    assert "must use a sleep node" in issues[0].message
    assert "node 'c': timeout 600s" in issues[1].message


def test_bad_conditions_name_the_edge_and_the_expression() -> None:
    bp = Blueprint(
        id="flow",
        nodes=(node("a"), node("b"), node("c"), node("check-out")),
        edges=(
            EdgeSpec(source="a", target="b", condition="output.total >"),
            EdgeSpec(source="a", target="c", condition="open('f')"),
            EdgeSpec(source="a", target="check-out", condition="check-out.total > 1 && ok"),
        ),
    )
    issues = validate(bp)
    assert [(i.code, i.edge) for i in issues] == [
        ("bad-condition", ("a", "b")),
        ("bad-condition", ("a", "c")),
        ("bad-condition", ("a", "check-out")),
    ]
    assert issues[0].message.startswith("edge 'a' -> 'b': condition 'output.total >' is invalid")
    assert "syntax error" in issues[0].message
    assert "a function call is not allowed" in issues[1].message
    assert "reads 'check-out' as a subtraction; write context['check-out']" in issues[2].message


def test_check_raises_with_every_issue() -> None:
    bp = bp_of([node("a", "mystery", max_attempts=0), node("b")], [("a", "b"), ("b", "zzz")])
    with pytest.raises(BlueprintError) as info:
        check(bp, known_uses={"u"})
    exc = info.value
    assert [i.code for i in exc.issues] == ["unknown-uses", "dangling-edge", "bad-config"]
    text = str(exc)
    assert text.startswith("blueprint 'flow' is invalid:\n  - node 'a': unknown uses 'mystery'")
    assert "\n  - edge 'b' -> 'zzz': target 'zzz' is not a node" in text
    assert "\n  - node 'a': maxRetries counts attempts in total" in text
