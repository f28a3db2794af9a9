"""flowcraft ``packages/core/test/runtime/adapter.test.ts`` (``describe('BaseDistributedAdapter')``)
and ``test/runtime/traverser.test.ts``: the distributed job protocol and join readiness, as
blueprint-level behaviour on flowbridge's engine (the Kafka side of flowcraft's job shape is
``tests/e2e/test_flowcraft_protocol.py``).

flowcraft's adapter tests mock the runtime and the coordination store and pin its Redis
keys (``fanin``, ``joinlock``, poison pills): flowbridge replaces those with the state
store's arrival sets and conditional writes, so what is ported is what a run does.
"""

from __future__ import annotations

from collections import Counter

from tests.compat.helpers import boom, bp, e, echo, n, out, ran, runner, value


def linear(calls: Counter[str]) -> dict:
    return bp("linear", [n("A"), n("B")], [e("A", "B")])


def test_a_node_runs_and_its_successor_is_enqueued(calls: Counter[str]) -> None:
    """adapter.test.ts > should execute a node and enqueue the next one in a linear flow."""
    r = runner({"A": value("Result from A", calls=calls), "B": echo(calls=calls)}, linear(calls))
    run_id = r.start("linear", {}, drain=False)
    assert [t.task.node_id for t in r.port.queue if t.task] == ["A"]
    r.drain()
    result = r.result(run_id)
    assert out(result, "B") == "Result from A"
    assert calls == Counter({"A": 1, "B": 1})


def test_completion_is_published_when_the_terminal_node_finishes(calls: Counter[str]) -> None:
    """adapter.test.ts > should publish a "completed" result when all terminal nodes finish /
    should complete the workflow when a terminal node finishes, even if not an output node."""
    r = runner({"A": value(1), "B": value(2)}, linear(calls))
    result = r.run("linear", {})
    assert result["status"] == "completed"
    mine = [p.value for p in r.published if p.key == result["run_id"] and p.topic.endswith("runs")]
    assert [m["type"] for m in mine] == ["run.started", "run.completed"]
    assert mine[-1]["output"] == {"B": 2}


def flaky(calls: Counter[str]):  # type: ignore[no-untyped-def]
    """A node that fails its first attempt."""

    def fn(ctx) -> str:  # type: ignore[no-untyped-def]
        calls[ctx.node_id] += 1
        if ctx.attempt == 1:
            raise RuntimeError("not yet")
        return ctx.node_id

    return fn


def test_the_run_waits_for_every_terminal_node(calls: Counter[str]) -> None:
    """adapter.test.ts > should not complete the workflow until all terminal nodes finish."""
    r = runner(
        {"A": value("a"), "B": value("b"), "C": flaky(calls)},
        bp(
            "fork",
            [n("A"), n("B"), n("C", config={"maxRetries": 2, "retryDelay": 60_000})],
            [e("A", "B"), e("A", "C")],
        ),
    )
    run_id = r.start("fork", {})
    assert ran(r.result(run_id)) == {"A", "B"}, "terminal B is done, C waits for its retry"
    assert r.result(run_id)["status"] == "running"
    r.drain(advance=True)
    assert r.result(run_id)["status"] == "completed"


def fan_in(strategy: str) -> dict:
    return bp(
        "fan",
        [n("A"), n("B"), n("C", config={"joinStrategy": strategy})],
        [e("A", "C"), e("B", "C")],
    )


def test_an_all_join_waits_for_every_predecessor(calls: Counter[str]) -> None:
    """adapter.test.ts > should wait for all predecessors with "all" join strategy / should
    enqueue the job when the last predecessor arrives; traverser.test.ts (``all``: C ready
    only after A and B)."""
    r = runner(
        {"A": value("a"), "B": flaky(calls), "C": echo(calls=calls)},
        bp(
            "fan",
            [n("A"), n("B", config={"maxRetries": 2, "retryDelay": 60_000}), n("C")],
            [e("A", "C"), e("B", "C")],
        ),
    )
    run_id = r.start("fan", {})
    assert r.store.get_node(run_id, "C") is None, "A arrived, B not yet: C is not enqueued"
    r.drain(advance=True)
    assert calls["C"] == 1
    assert r.store.get_arrivals(run_id, "C") == {"A": "completed", "B": "completed"}


def test_an_any_join_is_enqueued_once_for_the_first_predecessor(calls: Counter[str]) -> None:
    """adapter.test.ts > should enqueue the job only for the first predecessor with "any" join
    strategy / should not enqueue the job for subsequent predecessors; traverser.test.ts
    (``any``: C ready after A)."""
    blueprint = fan_in("any")
    blueprint["nodes"][1]["config"] = {"maxRetries": 2, "retryDelay": 1000}
    r = runner({"A": value("a"), "B": flaky(calls), "C": echo(calls=calls)}, blueprint)
    result = r.run("fan", {})
    assert result["status"] == "completed"
    assert calls["C"] == 1
    assert out(result, "C") == "a", "the first predecessor's output"
    assert [h["kind"] for h in r.history(result["run_id"])].count("join.fired") == 1
    assert out(result, "B") == "B", "the other branch goes on (an any join cancels nothing)"


def test_a_failed_predecessor_of_an_all_join_fails_the_run(calls: Counter[str]) -> None:
    """adapter.test.ts > should write poison pill for "all" join successors when a node fails
    fatally / should publish a "failed" result on node execution error."""
    r = runner({"A": boom(), "B": value("b"), "C": echo(calls=calls)}, fan_in("all"))
    result = r.run("fan", {})
    assert result["status"] == "failed"
    assert calls["C"] == 0
    failed = [
        p.value for p in r.published if p.topic.endswith("runs") and p.value["type"] == "run.failed"
    ]
    assert len(failed) == 1 and "boom" in failed[0]["error"]


def test_a_redelivered_completed_node_is_not_run_again(calls: Counter[str]) -> None:
    """adapter.test.ts > should skip execution and enqueue successors when node is already
    completed / should declare workflow complete when idempotent skip completes last terminal
    node (flowbridge publishes the completion once)."""
    r = runner({"A": value("a", calls=calls), "B": value("b", calls=calls)}, linear(calls))
    result = r.run("linear", {})
    bp_ = r.rt.blueprint_of(r.store.get_run(result["run_id"]))  # type: ignore[arg-type]
    r.rt.dispatch(bp_, result["run_id"], "A")
    r.rt.dispatch(bp_, result["run_id"], "B")
    r.drain()
    assert calls == Counter({"A": 1, "B": 1})
    kinds = [h["kind"] for h in r.history(result["run_id"])]
    assert kinds.count("run.completed") == 1
    assert kinds.count("node.completed") == 2


def test_start_nodes_are_what_a_fresh_run_enqueues(calls: Counter[str]) -> None:
    """adapter.test.ts > should handle start nodes correctly (reconcile of a run with nothing
    done enqueues its start node) / should reconcile a linear workflow with completed nodes."""
    r = runner(
        {"start": value(1), "next": value(2)},
        bp("s", [n("start"), n("next")], [e("start", "next")]),
    )
    run_id = r.start("s", {}, drain=False)
    assert [t.task.node_id for t in r.port.queue if t.task] == ["start"]
    r.port.queue.clear()  # the task is lost (a Redis failure): the reconciler re-emits it
    r.clock.advance(r.rt.settings.stalled_after_s + 1)
    assert r.reconcile()["reconciled"] == 1
    assert r.result(run_id)["status"] == "completed"


def test_resume_clears_the_wait_and_enqueues_the_successor(calls: Counter[str]) -> None:
    """adapter.test.ts > should set resume data and clear awaiting state / should mark the
    awaiting node as completed so successors are enqueued / should handle resume without
    optional output data / should handle fan-in successors after resuming an awaiting node."""
    r = runner(
        {"start": value("s"), "other": value("o"), "gather": echo(calls=calls)},
        bp(
            "resume",
            [n("start"), n("wait", "wait"), n("other"), n("gather")],
            [e("start", "wait"), e("wait", "gather"), e("other", "gather")],
        ),
    )
    run_id = r.start("resume", {})
    assert r.result(run_id)["status"] == "waiting"
    assert calls["gather"] == 0
    r.resume(run_id, "wait")
    result = r.result(run_id)
    assert result["status"] == "completed"
    assert result["nodes"]["wait"]["output"] is None
    assert calls["gather"] == 1
