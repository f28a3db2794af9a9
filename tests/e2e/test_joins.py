"""Fan-out and fan-in on real Celery workers: joins fire exactly once, whatever is redelivered."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import BIN, Stack, on_both_stores

pytestmark = pytest.mark.e2e


def statuses(run: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {n: v["status"] for n, v in run["nodes"].items()}


@on_both_stores
def test_diamond_runs_branches_in_a_chord_and_the_join_once(stack: Stack) -> None:
    run = stack.client.start("diamond", {}).result(timeout=30)

    assert run["status"] == "completed", run
    assert set(statuses(run).values()) == {"completed"}
    assert [stack.effects(n) for n in ("start", "left", "right", "join", "end")] == [1, 1, 1, 1, 1]
    kinds = [h.kind for h in stack.store.get_history(run["run_id"])]
    assert kinds.count("join.fired") == 1
    assert "flowbridge.run_branch" in (stack.iso.tmp_path / "worker.log").read_text()


def test_branches_of_several_nodes_advance_inside_the_chord_with_retries(stack: Stack) -> None:
    run = stack.client.start("diamond-chains", {}).result(timeout=30)

    assert run["status"] == "completed", run
    assert run["nodes"]["r2"]["attempts"] == 2, "a retry stays inside the chord"
    assert [stack.effects(n) for n in ("l1", "l2", "l3", "r1", "r2", "join")] == [1] * 6
    branches = run["nodes"]["join"]["output"]["branches"]
    assert branches["l3"]["outcome"] == branches["r2"]["outcome"] == "completed"


def test_wide_fan_out_of_1000_and_join(stack: Stack) -> None:
    started = time.monotonic()
    run = stack.client.start("wide", {}).result(timeout=150)
    elapsed = time.monotonic() - started

    assert run["status"] == "completed", run["error"]
    assert sum(1 for s in statuses(run).values() if s == "completed") == 1003
    assert stack.effects("join") == 1
    assert stack.effects("w0999") == 1
    print(f"1,000-wide fan-out + join: {elapsed:.2f}s")


def test_nested_fan_out_inside_a_branch(stack: Stack) -> None:
    run = stack.client.start("nested", {}).result(timeout=30)

    assert run["status"] == "completed", run
    assert [stack.effects(n) for n in ("a2x", "a2y", "a3", "b1", "join")] == [1] * 5
    assert set(run["nodes"]["join"]["output"]["branches"]) == {"a3", "b1"}


def test_race_loser_that_had_not_started_is_revoked_and_never_runs(stack_factory) -> None:  # type: ignore[no-untyped-def]
    s = stack_factory()
    s.start_bridge()
    s.start_worker(concurrency=1)  # the branches queue: fast runs first, the loser waits
    handle = s.client.start("race", {})
    run = handle.result(timeout=30)
    time.sleep(2)  # long enough for the loser to have run, had it not been stopped

    assert run["status"] == "completed", run
    assert s.effects("join") == 1
    assert run["nodes"]["slow1"]["status"] == "cancelled"
    assert "lost the race at join 'join'" in run["nodes"]["slow1"]["error"]
    assert s.effects("slow1.started") == 0, "the revoked loser never ran"
    assert s.effects("slow2") == 0


@on_both_stores
def test_race_loser_already_running_finishes_but_nothing_after_it_runs(stack: Stack) -> None:
    handle = stack.client.start("race-running", {})
    stack.wait_for(lambda: stack.effects("slow1.started") == 1, what="the loser running")
    run = handle.result(timeout=30)
    stack.wait_for(lambda: stack.effects("slow1") == 1, what="the loser's code to finish")
    time.sleep(0.5)

    assert run["status"] == "completed", run
    assert stack.effects("join") == 1
    assert run["nodes"]["slow1"]["status"] == "cancelled"
    assert stack.effects("slow2") == 0
    assert "slow2" not in stack.client.get_run(handle.run_id)["nodes"]


@on_both_stores
def test_all_settled_passes_each_branch_outcome_to_the_join(stack: Stack) -> None:
    run = stack.client.start("settled", {}).result(timeout=30)

    assert run["status"] == "completed", run
    assert run["nodes"]["bad"]["status"] == "failed"
    branches = run["nodes"]["join"]["output"]["branches"]
    assert branches["ok"]["outcome"] == "completed"
    assert branches["bad"]["outcome"] == "failed"
    assert "card declined" in branches["bad"]["error"]


def test_all_join_fails_fast_when_a_branch_fails_for_good(stack: Stack) -> None:
    run = stack.client.start("failfast", {}).result(timeout=30)

    assert run["status"] == "failed"
    assert "node 'bad' failed" in run["error"]
    assert stack.effects("join") == 0


@on_both_stores
def test_quorum_two_of_three(stack: Stack) -> None:
    run = stack.client.start("quorum", {}).result(timeout=30)

    assert run["status"] == "completed", run
    assert stack.effects("join") == 1
    assert run["nodes"]["q3"]["status"] == "cancelled"
    assert {k for k, v in run["nodes"]["join"]["output"]["branches"].items() if v["outcome"]} == {
        "q1",
        "q2",
    }


def test_conditional_split_into_a_join_does_not_wait_for_the_branch_not_taken(stack: Stack) -> None:
    run = stack.client.start("split-join", {"route": "yes"}).result(timeout=30)

    assert run["status"] == "completed", run
    assert statuses(run)["no"] == statuses(run)["no2"] == "skipped"
    assert stack.effects("join") == 1
    assert run["nodes"]["join"]["output"]["branches"]["no2"]["outcome"] == "skipped"


@on_both_stores
def test_redelivered_branch_completions_and_node_jobs_fire_the_join_once(stack: Stack) -> None:
    handle = stack.client.start("diamond", {})
    assert handle.result(timeout=30)["status"] == "completed"
    # Deliver everything again, twice: branch tasks, chord bodies and node jobs.
    for _ in range(2):
        for node in ("left", "right"):
            stack.send_task("flowbridge.run_branch", handle.run_id, node_id=node)
            stack.produce({"v": 1, "type": "node", "run_id": handle.run_id, "node": node})
        stack.send_task("flowbridge.fire_join", handle.run_id, [], join_id="join")
    stack.wait_for(
        lambda: sum(h.kind == "node.ignored" for h in stack.store.get_history(handle.run_id)) >= 4,
        what="the redelivered node jobs to be handled",
    )
    time.sleep(1)
    assert [stack.effects(n) for n in ("left", "right", "join", "end")] == [1, 1, 1, 1]
    kinds = [h.kind for h in stack.store.get_history(handle.run_id)]
    assert kinds.count("join.fired") == 1


def test_redelivery_mid_run_cannot_fire_the_join_twice_or_stop_it(stack: Stack) -> None:
    handle = stack.client.start("slow-diamond", {})
    stack.wait_for(lambda: stack.effects("s1.started") == 1, what="s1 running")
    for _ in range(2):
        stack.send_task("flowbridge.run_branch", handle.run_id, node_id="s1")
        stack.produce({"v": 1, "type": "node", "run_id": handle.run_id, "node": "s2"})
        stack.send_task("flowbridge.fire_join", handle.run_id, [], join_id="join")
    run = handle.result(timeout=30)

    assert run["status"] == "completed", run
    assert [stack.effects(n) for n in ("s1", "s2", "join", "end")] == [1, 1, 1, 1]
    assert [h.kind for h in stack.store.get_history(handle.run_id)].count("join.fired") == 1


@on_both_stores
def test_lost_chord_is_recovered_by_the_reconciler_and_fires_once(stack_factory) -> None:  # type: ignore[no-untyped-def]
    s = stack_factory(FLOWBRIDGE_STALLED_AFTER_S="0.5")
    s.start_bridge()
    s.start_worker()
    handle = s.client.start("slow-diamond", {})
    s.wait_for(
        lambda: s.effects("s1.started") == 1 and s.effects("s2.started") == 1,
        what="both branches running",
    )
    # Lose every Celery key (queues, unacked, chord size and counters), keep the test's counters.
    for key in s.redis.scan_iter():
        if b"effects:" not in key and b"pid:" not in key:
            s.redis.delete(key)
    s.wait_for(
        lambda: (
            s.node_status(handle.run_id, "s1") == s.node_status(handle.run_id, "s2") == "completed"
        ),
        what="branches committed",
    )
    time.sleep(2)
    assert s.store.get_run(handle.run_id).status == "running", "the chord body never came"
    assert s.node_status(handle.run_id, "join") is None

    out = subprocess.run(
        [str(BIN / "flowbridge"), "reconcile", "--once"],
        env=s.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert '"reconciled": 1' in out.stdout
    run = handle.result(timeout=30)

    assert run["status"] == "completed", run
    assert [s.effects(n) for n in ("s1", "s2", "join", "end")] == [1, 1, 1, 1]
    kinds = [h.kind for h in s.store.get_history(handle.run_id)]
    assert kinds.count("join.fired") == 1


def test_cancel_revokes_queued_branch_tasks_and_runs_no_more_branch_code(stack: Stack) -> None:
    handle = stack.client.start("slow-fan", {})
    started = lambda: sum(stack.effects(f"sf{i}.started") for i in range(6))  # noqa: E731
    stack.wait_for(lambda: started() == 2, what="two branches running (concurrency 2)")
    handle.cancel("stop the fan-out")
    run = handle.result(timeout=30)
    time.sleep(3)  # long enough for every queued branch to have run, had it not been stopped

    assert run["status"] == "cancelled"
    assert started() == 2, "queued branches never ran their code"
    assert stack.effects("join") == 0
    log = (stack.iso.tmp_path / "worker.log").read_text()
    assert "revoked" in log, "the queued branch tasks were revoked, not only ignored"
