"""Probes: scenarios beyond flowcraft's own tests whose outcome was observed by running
flowcraft 584967b (``packages/core``, in-memory ``FlowRuntime``; probes P01-R1 of the research
catalog): routing, retries, joins, fallbacks, inputs. Each names its probe and the flowcraft
outcome; those that differ on purpose say why."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from flowbridge import NodeContext, NodeError
from tasks.errors import BlueprintError
from tests.compat.helpers import boom, bp, e, echo, n, out, ran, run, runner, value


def test_a_false_condition_on_the_matching_action_falls_back_to_the_default_edge() -> None:
    """Probe P02: ``A -> B {go} [1 === 2]``, ``A -> C``; A returns action ``go``: C runs."""
    result = run(
        {"A": value(1, "go"), "B": value("B"), "C": value("C")},
        bp(
            "p02",
            [n("A"), n("B"), n("C")],
            [e("A", "B", action="go", condition="1 === 2"), e("A", "C")],
        ),
    )
    assert ran(result) == {"A", "C"}
    assert result["nodes"]["B"]["status"] == "skipped"


def test_a_matching_action_edge_excludes_the_default_edges() -> None:
    """Probe P02b: ``A -> B {go}``, ``A -> C``: B runs, C not."""
    result = run(
        {"A": value(1, "go"), "B": value("B"), "C": value("C")},
        bp("p02b", [n("A"), n("B"), n("C")], [e("A", "B", action="go"), e("A", "C")]),
    )
    assert ran(result) == {"A", "B"}


def test_conditional_and_default_edges_fan_out() -> None:
    """Probe P02c: ``A -> B [result.output === 1]``, ``A -> C``: both run."""
    result = run(
        {"A": value(1), "B": value("B"), "C": value("C")},
        bp(
            "p02c",
            [n("A"), n("B"), n("C")],
            [e("A", "B", condition="result.output === 1"), e("A", "C")],
        ),
    )
    assert ran(result) == {"A", "B", "C"}


@pytest.mark.parametrize(("max_retries", "calls_expected"), [(1, 1), (3, 3), (None, 1)])
def test_max_retries_counts_attempts(max_retries: int | None, calls_expected: int) -> None:
    """Probe P03: an always-failing node with maxRetries 1 / 3 / unset is called 1 / 3 / 1
    times."""
    calls: Counter[str] = Counter()
    config = {} if max_retries is None else {"maxRetries": max_retries}
    result = run({"A": boom(calls=calls)}, bp("p03", [n("A", config=config)]))
    assert result["status"] == "failed"
    assert calls["A"] == calls_expected
    assert result["nodes"]["A"]["attempts"] == calls_expected


@pytest.mark.differs("validation")
def test_max_retries_zero_is_refused() -> None:
    """Probe P03 (maxRetries 0): flowcraft never calls the node and fails it; flowbridge
    refuses the blueprint (an attempt count below 1 is a mistake)."""
    with pytest.raises(BlueprintError, match="at least 1"):
        run({"A": value(1)}, bp("p03", [n("A", config={"maxRetries": 0})]))


@pytest.mark.differs("retryDelay is honoured")
def test_retry_delay_is_waited_for() -> None:
    """Probe P03b: maxRetries 3, retryDelay 300: flowcraft retries back to back (1 ms in
    all); flowbridge waits 300 ms, then 600 ms (a virtual clock here)."""
    calls: Counter[str] = Counter()
    r = runner(
        {"A": boom(calls=calls)}, bp("p03b", [n("A", config={"maxRetries": 3, "retryDelay": 300})])
    )
    before = r.clock()
    result = r.run("p03b", {})
    assert calls["A"] == 3
    assert r.clock() - before >= 0.9 - 1e-6
    assert result["status"] == "failed"


def test_an_any_join_runs_on_the_branch_that_completed_and_a_failed_branch_fails_the_run() -> None:
    """Probe P04: ``A!``, ``B='B'``, ``A,B -> C (any)``: C runs once with B's output; the run
    fails with A in errors. (A fails after a retry here, so that C has run by then.)"""
    calls: Counter[str] = Counter()
    result = run(
        {"A": boom(calls=calls), "B": value("B"), "C": echo(calls=calls)},
        bp(
            "p04",
            [
                n("A", config={"maxRetries": 2, "retryDelay": 1000}),
                n("B"),
                n("C", config={"joinStrategy": "any"}),
            ],
            [e("A", "C"), e("B", "C")],
        ),
    )
    assert result["status"] == "failed"
    assert [err["node"] for err in result["errors"]] == ["A"]
    assert calls["C"] == 1
    assert out(result, "C") == "B"


@pytest.mark.differs("an any join runs once")
def test_an_any_join_is_decided_once() -> None:
    """Probe P04b: ``A -> C``, ``B0 -> B -> C``, C ``any``: flowcraft runs C twice (once per
    arrival round); flowbridge decides an ``any`` join once (P04c, ``all``: once in both)."""
    for strategy in ("any", "all"):
        calls: Counter[str] = Counter()
        result = run(
            {"A": value("a"), "B0": value("b0"), "B": value("b"), "C": echo(calls=calls)},
            bp(
                f"p04b-{strategy}",
                [n("A"), n("B0"), n("B"), n("C", config={"joinStrategy": strategy})],
                [e("A", "C"), e("B0", "B"), e("B", "C")],
            ),
        )
        assert result["status"] == "completed"
        assert calls["C"] == 1, strategy


@pytest.mark.differs("a skipped predecessor settles an all join")
def test_an_all_join_after_an_untaken_branch_runs() -> None:
    """Probe P05: ``S -> X {x}``, ``S -> Y {y}``, ``X -> J``, ``Y -> J``; S takes ``x``:
    flowcraft never runs J (its predecessor Y never completes) and still calls the run
    completed; flowbridge counts the skipped Y as settled, so J runs."""
    result = run(
        {"S": value(1, "x"), "X": value("x"), "Y": value("y"), "J": echo()},
        bp(
            "p05",
            [n("S"), n("X"), n("Y"), n("J")],
            [e("S", "X", action="x"), e("S", "Y", action="y"), e("X", "J"), e("Y", "J")],
        ),
    )
    assert result["status"] == "completed"
    assert ran(result) == {"S", "X", "J"}
    assert out(result, "J") == "x"


@pytest.mark.differs("expressions with operators")
def test_conditions_read_nodes_by_id_and_the_context() -> None:
    """Probe P06: ``route = {total: 900, flag: true}``, initial ``seed = 5``; edges
    ``[route.total < 500]``, ``[route.total >= 500]``, ``[result.output.flag]``,
    ``[seed > 1]``, ``[context.seed]``. flowcraft's UnsafeEvaluator takes all but the first
    (flowbridge's too); its default evaluator only ``result.output.flag``."""
    targets = ["lo", "hi", "p", "q", "ctx"]
    conditions = [
        "route.total < 500",
        "route.total >= 500",
        "result.output.flag",
        "seed > 1",
        "context.seed",
    ]
    result = run(
        {"route": value({"total": 900, "flag": True}), **{t: value(t) for t in targets}},
        bp(
            "p06",
            [n("route"), *[n(t) for t in targets]],
            [e("route", t, condition=c) for t, c in zip(targets, conditions, strict=True)],
        ),
        {"seed": 5},
    )
    assert ran(result) == {"route", "hi", "p", "q", "ctx"}


def test_a_fallback_routes_along_its_own_and_the_failed_node_s_edges() -> None:
    """Probe P07: ``S -> F! (fallback FB)``, ``F -> N``, ``FB -> M``: N and M both run with
    FB's output. (flowcraft gives FB no input; flowbridge gives it F's: difference
    "a fallback's input".)"""
    seen: dict[str, Any] = {}

    def fb(ctx: NodeContext) -> str:
        seen["FB"] = ctx.input
        return "fb-out"

    result = run(
        {"S": value("s-out"), "F": boom(), "FB": fb, "N": echo(), "M": echo()},
        bp(
            "p07",
            [n("S"), n("F", config={"fallback": "FB"}), n("FB"), n("N"), n("M")],
            [e("S", "F"), e("F", "N"), e("FB", "M")],
        ),
    )
    assert result["status"] == "completed", result
    assert (out(result, "N"), out(result, "M")) == ("fb-out", "fb-out")
    assert seen["FB"] == "s-out"


@pytest.mark.differs("a fallback does not hide other failures")
def test_a_fallback_does_not_mask_other_failures() -> None:
    """Probes P07b and P07c: ``A! (fallback FB)`` plus an unrelated ``Z!``: flowcraft calls
    the run completed whenever a fallback ran (even when FB fails too); in flowbridge a
    fallback answers for its own node only, so Z's failure (or FB's) fails the run."""
    for fb in (boom(), value(1)):
        result = run(
            {"A": boom(), "FB": fb, "Z": boom("z")},
            bp("p07b", [n("A", config={"fallback": "FB"}), n("FB"), n("Z")]),
        )
        assert result["status"] == "failed"
        assert "Z" in {err["node"] for err in result["errors"]}


def test_inputs_mappings_of_every_kind() -> None:
    """Probe P08: ``A,B -> C``; ``C -> D (inputs {a:'A', k:'seed', miss:'nope',
    under:'_outputs.B'})``, ``C -> E (inputs '')``, ``C -> F (inputs {})``, ``C -> G (inputs
    'seed') <input>``; initial ``seed = 7``. (flowcraft's start node A reads the initial
    ``_inputs.A``; a flowbridge start node gets the run's input: difference "a start node's
    input".)"""
    names = {
        "A": value("A-out"),
        "B": value("B-out"),
        "C": value("C-out"),
        **{k: echo() for k in "DEFG"},
    }
    result = run(
        names,
        bp(
            "p08",
            [
                n("A"),
                n("B"),
                n("C"),
                n("D", inputs={"a": "A", "k": "seed", "miss": "nope", "under": "_outputs.B"}),
                n("E", inputs=""),
                n("F", inputs={}),
                n("G", inputs="seed"),
            ],
            [
                e("A", "C"),
                e("B", "C"),
                e("C", "D"),
                e("C", "E"),
                e("C", "F"),
                e("C", "G", transform="input"),
            ],
        ),
        {"seed": 7},
    )
    assert out(result, "D") == {"a": "A-out", "k": 7, "miss": None, "under": "B-out"}
    assert out(result, "E") == "C-out"
    assert out(result, "F") == {}
    assert out(result, "G") == "C-out", "an edge transform wins over the inputs mapping"


@pytest.mark.differs("a cancelled run keeps its context")
def test_a_cancelled_run_keeps_its_context() -> None:
    """Probe P09: a cancelled flowcraft run returns an empty context; flowbridge's keeps what
    its nodes wrote."""
    holder: dict[str, Any] = {}

    def a(ctx: NodeContext) -> str:
        ctx.context.set("seen", True)
        return "a"

    def b(ctx: NodeContext) -> str:
        holder["r"].rt.store  # noqa: B018 - the runner is there
        from tasks.engine import cancel_run

        cancel_run(holder["r"].rt, ctx.run_id, "stop")
        return "b"

    r = runner(
        {"A": a, "B": b, "C": value("c")},
        bp("p09", [n("A"), n("B"), n("C")], [e("A", "B"), e("B", "C")]),
    )
    holder["r"] = r
    result = r.run("p09", {"k": 1})
    assert result["status"] == "cancelled"
    assert result["context"] == {"k": 1, "seen": True}


@pytest.mark.differs("resuming a subflow node")
def test_a_subflow_node_cannot_be_resumed() -> None:
    """Probe P10: resuming flowcraft's ``subflow`` node completes it with the resume output
    and the child never finishes; in flowbridge the child is a run of its own, so the child's
    wait is what is resumed (``test_waiting::test_a_wait_inside_a_subflow``), and a resume of
    the subflow node is refused."""
    from tasks.errors import ResumeError

    r = runner(
        {},
        bp("main", [n("m", "subflow", params={"blueprintId": "sub"})]),
        bp("sub", [n("w", "wait")]),
    )
    run_id = r.start("main", {})
    with pytest.raises(ResumeError, match="cannot be resumed"):
        r.resume(run_id, "m", output="RESUMED")


def test_each_pass_of_a_loop_gets_the_previous_pass_s_output() -> None:
    """Probe P11: a loop ``L`` (body ``inc``, condition ``count < 3``) between ``init`` and
    ``fin``: count ends at 3, each ``inc`` got the previous ``inc``'s output, ``fin`` the
    last."""
    seen: list[Any] = []

    def inc(ctx: NodeContext) -> int:
        seen.append(ctx.input)
        ctx.context.set("count", ctx.context.get("count", 0) + 1)
        return ctx.context.get("count") * 10

    result = run(
        {"init": value(0), "inc": inc, "fin": echo()},
        bp(
            "p11",
            [
                n("init"),
                n("L", "loop-controller", params={"condition": "count < 3"}),
                n("inc"),
                n("fin"),
            ],
            [
                e("init", "L"),
                e("L", "inc", action="continue"),
                e("inc", "L"),
                e("L", "fin", action="break"),
            ],
        ),
        {"count": 0},
    )
    assert result["context"]["count"] == 3
    assert seen == [0, 10, 20]
    assert out(result, "fin") == 30


@pytest.mark.differs("batch chunkSize")
def test_a_batch_in_chunks() -> None:
    """Probe P12: a scatter with ``chunkSize: 2`` over 5 items fails in flowcraft (its
    follow-up scatter gets no list); flowbridge runs the items 2 at a time and gathers all 5."""
    r = runner(
        {"prepare": value(list(range(5))), "worker": lambda ctx: ctx.input * 2},
        bp(
            "p12",
            [
                n("prepare"),
                n(
                    "b_scatter",
                    "batch-scatter",
                    inputs="prepare",
                    params={"workerUsesKey": "worker", "chunkSize": 2},
                ),
                n("b_gather", "batch-gather"),
            ],
            [e("prepare", "b_scatter"), e("b_scatter", "b_gather")],
        ),
    )
    result = r.run("p12", {})
    assert result["status"] == "completed", result
    assert r.batch(result["run_id"], "b_gather") == [0, 2, 4, 6, 8]
    windows = [
        h
        for h in r.history(result["run_id"])
        if h["kind"] == "node.started" and h["node"].startswith("b_scatter[")
    ]
    assert len(windows) == 5


@pytest.mark.differs("no edge taken")
def test_an_unmatched_action_starts_nothing() -> None:
    """Probe Q1: A returns action ``x``; ``A -> B {y}``, ``A -> C {z} [true]``: flowcraft's
    in-memory runtime still starts B (input undefined); flowbridge takes no edge."""
    result = run(
        {"A": value(1, "x"), "B": value("b"), "C": value("c")},
        bp(
            "q1",
            [n("A"), n("B"), n("C")],
            [e("A", "B", action="y"), e("A", "C", action="z", condition="true")],
        ),
    )
    assert ran(result) == {"A"}
    assert result["status"] == "completed"


def test_a_false_only_edge_is_not_taken() -> None:
    """Probe Q1b: ``A -> B [false]`` only: B does not run."""
    result = run(
        {"A": value(1), "B": value("b")},
        bp("q1b", [n("A"), n("B")], [e("A", "B", condition="false")]),
    )
    assert ran(result) == {"A"}


@pytest.mark.parametrize("returned", [None, "str", 42])
def test_successors_of_a_node_returning_anything_run(returned: Any) -> None:
    """Probe Q2: A returns null / 'str' / 42; ``A -> B``: B runs (its input is A's output)."""
    result = run({"A": value(returned), "B": echo()}, bp("q2", [n("A"), n("B")], [e("A", "B")]))
    assert result["status"] == "completed"
    assert out(result, "B") == returned


@pytest.mark.differs("validation")
def test_an_unknown_implementation_is_refused() -> None:
    """Probe Q3: ``A (uses 'nope')`` beside an independent B: flowcraft fails A at run time
    (B runs); flowbridge refuses the blueprint, naming what is registered."""
    with pytest.raises(BlueprintError, match="unknown uses 'nope'"):
        run({"B": value("b")}, bp("q3", [n("A", "nope"), n("B")]))


@pytest.mark.differs("a non-retryable error and the fallback")
def test_a_non_retryable_error_is_not_retried_but_falls_back() -> None:
    """Probe Q3b: a fatal error with maxRetries 3 and a fallback: one call in both; flowcraft
    skips the fallback for a fatal error, flowbridge's fallback still answers for the node."""
    calls: Counter[str] = Counter()

    def fatal(ctx: NodeContext) -> None:
        calls["A"] += 1
        raise NodeError("fatal!", retryable=False)

    result = run(
        {"A": fatal, "FB": value("fb", calls=calls)},
        bp("q3b", [n("A", config={"maxRetries": 3, "fallback": "FB"}), n("FB")]),
    )
    assert calls == Counter({"A": 1, "FB": 1})
    assert result["status"] == "completed"


def test_a_failure_mid_chain_stops_its_branch_only() -> None:
    """Probe Q3c: ``A -> B! -> C`` and an independent D: the run fails; A and D ran, C not."""
    result = run(
        {"A": value("a"), "B": boom(), "C": value("c"), "D": value("d")},
        bp("q3c", [n("A"), n("D"), n("B"), n("C")], [e("A", "B"), e("B", "C")]),
    )
    assert result["status"] == "failed"
    assert {"A", "D"} <= ran(result)
    assert "C" not in ran(result)


def test_duplicate_edges_run_the_target_once() -> None:
    """Probe Q4 (the duplicate edges): ``A -> B`` twice: B runs once."""
    calls: Counter[str] = Counter()
    result = run(
        {"A": value(1), "B": value("b", calls=calls)},
        bp("q4", [n("A"), n("B")], [e("A", "B"), e("A", "B")]),
    )
    assert result["status"] == "completed"
    assert calls["B"] == 1


@pytest.mark.differs("validation")
@pytest.mark.parametrize("condition", ["((", "_outputs"])
def test_a_condition_that_cannot_be_evaluated_is_refused(condition: str) -> None:
    """Probe Q4 (the malformed conditions): flowcraft evaluates ``((`` and ``_outputs`` as
    false at run time; flowbridge refuses them when the blueprint is loaded."""
    with pytest.raises(BlueprintError, match="condition"):
        run(
            {"A": value(1), "B": value(1)},
            bp("q4", [n("A"), n("B")], [e("A", "B", condition=condition)]),
        )


def test_a_join_s_input_is_the_predecessor_that_completed_last() -> None:
    """Probe Q5: slow A and fast B into J: J gets A's output, the one that finished last."""

    def slow(ctx: NodeContext) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("slow")
        return "a"

    r = runner(
        {"A": slow, "B": value("b"), "J": echo()},
        bp(
            "q5",
            [n("A", config={"maxRetries": 2, "retryDelay": 30}), n("B"), n("J")],
            [e("A", "J"), e("B", "J")],
        ),
    )
    result = r.run("q5", {})
    assert out(result, "J") == "a"


@pytest.mark.differs("no edge taken")
def test_resuming_a_wait_does_not_run_untaken_branches() -> None:
    """Probe R1: ``S -> A``, ``S -> W (wait)``, ``A -> B {a}``, ``A -> C {b}``, ``W -> Z``;
    A takes ``a``, then W is resumed: flowcraft then runs B, C and Z (the resume re-adds C);
    flowbridge B and Z (C stays skipped)."""
    r = runner(
        {"S": value("s"), "A": value("x", "a"), "B": value("b"), "C": value("c"), "Z": value("z")},
        bp(
            "r1",
            [n("S"), n("A"), n("W", "wait"), n("B"), n("C"), n("Z")],
            [
                e("S", "A"),
                e("S", "W"),
                e("A", "B", action="a"),
                e("A", "C", action="b"),
                e("W", "Z"),
            ],
        ),
    )
    run_id = r.start("r1", {})
    r.resume(run_id, "W")
    result = r.result(run_id)
    assert result["status"] == "completed"
    assert ran(result) == {"S", "A", "W", "B", "Z"}
