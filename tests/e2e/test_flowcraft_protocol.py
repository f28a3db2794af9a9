"""flowcraft's side of the protocol through Kafka: its job shape starts a run, and a parked
``wait`` is resumed with an action and an output (``flowbridge resume``)."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.conftest import BIN, Stack, on_both_brokers, on_both_stores

pytestmark = pytest.mark.e2e


@on_both_brokers
@on_both_stores
def test_flowcraft_jobs_for_the_start_nodes_of_a_fresh_run_id_start_one_run(stack: Stack) -> None:
    run_id = f"fc-{uuid.uuid4().hex[:8]}"
    # flowcraft's client: one job per start node, keyed by the run id; then a redelivery.
    for node in ("left", "right", "left"):
        stack.produce({"runId": run_id, "blueprintId": "two-starts", "nodeId": node}, key=run_id)
    run = stack.client.handle(run_id).result(timeout=60)

    assert run["status"] == "completed", run
    assert run["blueprint"] == "two-starts" and run["input"] == {}
    assert [stack.effects(n) for n in ("left", "right", "both")] == [1, 1, 1]
    kinds = [h.kind for h in stack.store.get_history(run_id)]
    assert kinds.count("run.created") == 1


def test_a_flowcraft_job_for_a_node_that_is_not_a_start_node_is_dead_lettered(
    stack: Stack,
) -> None:
    run_id = f"fc-{uuid.uuid4().hex[:8]}"
    stack.produce({"runId": run_id, "blueprintId": "two-starts", "nodeId": "both"}, key=run_id)
    [dead] = stack.read_topic("dlq", 1)
    reason = dict(dead.headers)["flowbridge-error"].decode()
    assert reason == (
        f"unknown run {run_id!r}: a flowcraft job creates a run only for a start node of "
        "'two-starts' (left, right), not 'both'"
    )
    assert stack.store.get_run(run_id) is None


@on_both_stores
def test_resume_completes_a_wait_with_its_output_and_takes_the_action_s_edge(
    stack: Stack,
) -> None:
    handle = stack.client.start("review", {})
    stack.wait_for(lambda: handle.status() == "waiting", what="the run to wait")
    out = subprocess.run(
        [
            str(BIN / "flowbridge"),
            "resume",
            handle.run_id,
            "review",
            "--action",
            "approve",
            "--output",
            '{"ok": 1}',
        ],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(out.stdout)["node"] == "review"
    run = handle.result(timeout=30)

    assert run["status"] == "completed", run
    assert run["nodes"]["review"]["output"] == {"ok": 1}
    assert run["nodes"]["approve"]["status"] == "completed"
    assert run["nodes"]["reject"]["status"] == "skipped"
    assert stack.effects("approve") == 1 and stack.effects("reject") == 0


def test_resume_of_a_finished_run_is_refused_by_the_cli(stack: Stack) -> None:
    run = stack.client.start("linear", {}).result(timeout=30)
    out = subprocess.run(
        [str(BIN / "flowbridge"), "resume", run["run_id"], "a"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "is completed" in out.stderr


def test_resume_names_what_is_wrong_with_the_node_or_the_run(stack: Stack) -> None:
    """The mistakes of a new user, each answered at the CLI (exit 1 or 2), none published."""
    handle = stack.client.start("review", {})
    stack.wait_for(lambda: handle.status() == "waiting", what="the run to wait")

    def resume(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "flowbridge"), "resume", handle.run_id, *args],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    typo = resume("reveiw", "--action", "approve")
    assert typo.returncode == 1
    assert "has no node 'reveiw': only its wait and sleep nodes are resumed ('review')" in (
        typo.stderr
    )
    not_a_wait = resume("approve")
    assert not_a_wait.returncode == 1 and "cannot resume node 'approve'" in not_a_wait.stderr
    run_level = resume()
    assert run_level.returncode == 1
    assert "only a paused run is resumed (a parked wait: name its node" in run_level.stderr
    options_without_node = resume("--action", "approve")
    assert options_without_node.returncode == 2 and "name it after RUN_ID" in (
        options_without_node.stderr
    )
    assert handle.status() == "waiting"
    assert stack.read_topic("dlq", 1, timeout=2) == [], "nothing reached the bridge"
