"""Blueprint runs end to end: Kafka start message -> bridge -> Celery workers -> state store."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import BIN, ROOT, Stack, on_both_brokers, on_both_stores

pytestmark = pytest.mark.e2e


@on_both_brokers
@on_both_stores
def test_linear_run_completes_with_outputs_in_order(stack: Stack) -> None:
    run = stack.client.start("linear", {"order": 7}).result(timeout=30)

    assert run["status"] == "completed", run
    assert run["input"] == {"order": 7}
    assert [n for n, v in run["nodes"].items() if v["status"] == "completed"] == ["a", "b", "c"]
    assert run["output"] == {"c": {"node": "c", "params": {}, "attempt": 1}}
    history = [(h.kind, h.node_id) for h in stack.store.get_history(run["run_id"])]
    completed = [n for k, n in history if k == "node.completed"]
    assert completed == ["a", "b", "c"]
    assert [stack.effects(n) for n in "abc"] == [1, 1, 1]


@on_both_brokers
def test_run_started_and_completed_events_reach_the_runs_topic(stack: Stack) -> None:
    handle = stack.client.start("linear", {})
    handle.result(timeout=30)
    records = stack.read_topic("runs", 2)
    mine = [json.loads(r.value) for r in records if r.key == handle.run_id.encode()]
    assert [m["type"] for m in mine] == ["run.started", "run.completed"]
    ids = {dict(r.headers)["flowbridge-id"] for r in records}
    assert len(ids) == len(records), "every lifecycle record carries its own stable flowbridge-id"


@on_both_stores
def test_action_routes_to_matching_edge_and_skips_the_other_branch(stack: Stack) -> None:
    run = stack.client.start("branch", {"route": "yes"}).result(timeout=30)

    assert run["status"] == "completed", run
    nodes = {n: v["status"] for n, v in run["nodes"].items()}
    assert nodes["yes"] == "completed"
    assert nodes["no"] == "skipped"
    assert nodes["no-after"] == "skipped", "skips propagate down the branch not taken"
    assert nodes["always"] == "completed", "a start node with no edges runs in parallel"
    assert stack.effects("no") == 0 and stack.effects("no-after") == 0


def test_condition_on_output_and_context_chooses_the_edge(stack: Stack) -> None:
    gold = stack.client.start("conditional", {"score": 80})
    basic = stack.client.start("conditional", {"score": 10})
    g, b = gold.result(timeout=30), basic.result(timeout=30)

    assert (g["nodes"]["gold"]["status"], g["nodes"]["basic"]["status"]) == ("completed", "skipped")
    assert (b["nodes"]["gold"]["status"], b["nodes"]["basic"]["status"]) == ("skipped", "completed")
    # The context starts as the run's input (flowcraft's initial state) and has the node's write.
    assert stack.store.get_context(gold.run_id) == {"score": 80, "tier": "gold"}


@on_both_stores
def test_retries_with_backoff_until_success(stack: Stack) -> None:
    run = stack.client.start("retry", {}).result(timeout=30)

    assert run["status"] == "completed", run
    assert run["nodes"]["flaky"]["attempts"] == 3
    assert run["nodes"]["flaky"]["output"] == {"succeeded_on": 3}
    assert stack.effects("flaky.attempts") == 3
    kinds = [h.kind for h in stack.store.get_history(run["run_id"]) if h.node_id == "flaky"]
    assert kinds.count("node.retry") == 2


def test_retries_exhausted_fail_the_run_with_the_reason(stack: Stack) -> None:
    run = stack.client.start("exhaust", {}).result(timeout=30)

    assert run["status"] == "failed"
    assert "node 'flaky' failed after 2 attempt(s)" in run["error"]
    assert "transient failure on attempt 2" in run["error"]
    assert run["nodes"]["flaky"]["status"] == "failed"
    assert "after" not in run["nodes"]


def test_non_retryable_error_fails_at_once(stack: Stack) -> None:
    run = stack.client.start("declined", {}).result(timeout=30)

    assert run["status"] == "failed"
    assert "card declined" in run["error"]
    assert stack.effects("charge.attempts") == 1, "maxRetries is ignored for a non-retryable error"


def test_node_timeout_is_enforced(stack: Stack) -> None:
    run = stack.client.start("timeout", {}).result(timeout=30)

    assert run["status"] == "failed", run
    assert "timed out after 1s" in run["error"]
    assert stack.effects("slow.started") == 1
    assert stack.effects("slow") == 0, "the node was stopped, not allowed to finish"


@on_both_stores
def test_fallback_takes_the_failed_nodes_place(stack: Stack) -> None:
    run = stack.client.start("fallback", {}).result(timeout=30)

    assert run["status"] == "completed", run
    assert run["nodes"]["charge"]["status"] == "failed"
    assert "card declined" in run["nodes"]["charge"]["error"]
    assert run["nodes"]["manual"]["status"] == "completed"
    assert run["nodes"]["ship"]["status"] == "completed", "the primary's successors continue"


@on_both_stores
def test_redelivered_node_jobs_do_not_run_node_code_twice(stack: Stack) -> None:
    handle = stack.client.start("gated", {})
    stack.wait_for(
        lambda: stack.node_status(handle.run_id, "gate") == "running", what="gate running"
    )
    # The same node job three times, in both accepted shapes, while the run is in flight.
    stack.produce(
        {"v": 1, "type": "node", "run_id": handle.run_id, "node": "first"}, key=handle.run_id
    )
    stack.produce(
        {"v": 1, "type": "node", "run_id": handle.run_id, "node": "first"}, key=handle.run_id
    )
    stack.produce(
        {"runId": handle.run_id, "blueprintId": "gated", "nodeId": "first"}, key=handle.run_id
    )
    run = handle.result(timeout=30)

    assert run["status"] == "completed", run
    assert stack.effects("first") == 1
    assert stack.effects("gate") == 1
    assert stack.effects("last") == 1
    duplicates = [h for h in stack.store.get_history(handle.run_id) if h.kind == "node.completed"]
    assert [h.node_id for h in duplicates] == ["first", "gate", "last"]


def test_redelivered_start_does_not_create_a_second_run(stack: Stack) -> None:
    msg = {"v": 1, "type": "start", "run_id": "fixed-run-1", "blueprint": "linear", "input": {}}
    stack.produce(msg, key="fixed-run-1")
    stack.produce(msg, key="fixed-run-1")
    run = stack.client.handle("fixed-run-1").result(timeout=30)

    assert run["status"] == "completed"
    assert [stack.effects(n) for n in "abc"] == [1, 1, 1]
    created = [h for h in stack.store.get_history("fixed-run-1") if h.kind == "run.created"]
    assert len(created) == 1


def test_cancel_stops_dispatching_but_lets_the_running_node_finish(stack: Stack) -> None:
    handle = stack.client.start("gated", {})
    stack.wait_for(
        lambda: stack.node_status(handle.run_id, "gate") == "running", what="gate running"
    )
    handle.cancel("changed my mind")
    run = handle.result(timeout=30)

    assert run["status"] == "cancelled"
    assert run["error"] == "changed my mind"
    stack.wait_for(lambda: stack.effects("gate") == 1, what="the in-flight node to finish")
    assert stack.effects("last") == 0, "nothing is dispatched after the cancel"
    assert "last" not in run["nodes"]
    assert stack.store.get_run(handle.run_id).status == "cancelled"


@on_both_stores
def test_cancel_before_start_leaves_a_marker_the_start_obeys(stack: Stack) -> None:
    stack.produce({"v": 1, "type": "cancel", "run_id": "early-cancel"}, key="early-cancel")
    stack.wait_for(lambda: stack.store.get_run("early-cancel") is not None, what="cancel marker")
    stack.produce(
        {"v": 1, "type": "start", "run_id": "early-cancel", "blueprint": "linear", "input": {}},
        key="early-cancel",
    )
    stack.produce(
        {"v": 1, "type": "start", "blueprint": "linear", "input": {}, "run_id": "after-it"}
    )
    stack.client.handle("after-it").result(timeout=30)

    assert stack.store.get_run("early-cancel").status == "cancelled"
    assert stack.effects("a") == 1, "only the second run ran"


@on_both_stores
def test_emitted_values_are_published_after_the_commit(stack: Stack) -> None:
    handle = stack.client.start("emitter", {})
    assert handle.result(timeout=30)["status"] == "completed"
    records = stack.read_topic("user.events", 1) if False else []
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"], fetch_max_wait_ms=50
    )
    try:
        stack.wait_for(lambda: consumer.partitions_for_topic("user.events"), what="user topic")
        tps = [
            TopicPartition("user.events", p) for p in consumer.partitions_for_topic("user.events")
        ]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        stack.wait_for(
            lambda: (
                records.extend(r for b in consumer.poll(200).values() for r in b)
                or any(json.loads(r.value)["run_id"] == handle.run_id for r in records)
            ),
            what="the emitted record",
        )
    finally:
        consumer.close()
    mine = [r for r in records if json.loads(r.value)["run_id"] == handle.run_id]
    assert len(mine) == 1
    assert dict(mine[0].headers)["flowbridge-id"]


def test_cli_run_wait_prints_the_completed_example(stack_factory) -> None:  # type: ignore[no-untyped-def]
    s = stack_factory(
        FLOWBRIDGE_APP="examples.shop", FLOWBRIDGE_BLUEPRINTS=str(ROOT / "examples" / "blueprints")
    )
    s.start_bridge()
    s.start_worker()
    order = {"items": [{"price": 60, "qty": 2}]}
    out = subprocess.run(
        [
            str(BIN / "flowbridge"),
            "run",
            "order",
            "--input",
            json.dumps(order),
            "--wait",
            "--timeout",
            "60",
        ],
        env=s.env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout)
    assert run["status"] == "completed"
    assert run["nodes"]["charge"]["output"]["charged"] == 120
    assert run["nodes"]["ship-express"]["status"] == "completed"
    assert run["nodes"]["ship"]["status"] == "skipped"

    status = subprocess.run(
        [str(BIN / "flowbridge"), "status", run["run_id"], "--json"],
        env=s.env,
        capture_output=True,
        text=True,
    )
    assert json.loads(status.stdout)["status"] == "completed"

    failed = subprocess.run(
        [
            str(BIN / "flowbridge"),
            "run",
            "no-such-blueprint",
            "--run-id",
            "cli-bad",
            "--wait",
            "--timeout",
            "30",
        ],
        env=s.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1
    assert "unknown blueprint 'no-such-blueprint'" in json.loads(failed.stdout)["error"]
