"""Operating runs from the CLI on a running stack: history, retry from a node, pause, the DLQ."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.conftest import Stack, on_both_brokers, on_both_stores
from tests.e2e.test_cli import cli

pytestmark = pytest.mark.e2e


def _failed_fixme(stack: Stack) -> str:
    stack.redis.set(f"{stack.iso.redis_prefix}broken:fix", 1)
    run = stack.client.start("fixme", {"order": 1}).result(timeout=30)
    assert run["status"] == "failed", run
    return str(run["run_id"])


@on_both_stores
def test_see_why_a_run_failed_fix_the_node_and_retry_it_from_there(stack: Stack) -> None:
    run_id = _failed_fixme(stack)

    status = cli(stack, "status", run_id)
    assert status.returncode == 0, status.stderr
    assert "fix is broken" in status.stdout
    history = cli(stack, "history", run_id)
    assert history.returncode == 0, history.stderr
    failed = [line for line in history.stdout.splitlines() if "node.failed" in line]
    assert len(failed) == 1 and " fix " in failed[0] and "fix is broken" in failed[0], (
        history.stdout
    )
    timeline = json.loads(cli(stack, "history", run_id, "--json").stdout)
    started = [r for r in timeline if r["event"] == "node.started" and r["node"] == "fix"]
    assert started[0]["attempt"] == 1

    refused = cli(stack, "retry", run_id, "--from", "nope")
    assert refused.returncode == 1 and "has no node 'nope'" in refused.stderr

    stack.redis.delete(f"{stack.iso.redis_prefix}broken:fix")  # "fix the node"
    out = cli(stack, "retry", run_id, "--from", "fix")
    assert out.returncode == 0, out.stderr
    run = stack.client.handle(run_id).result(timeout=30)

    assert run["status"] == "completed", run
    assert run["attempt"] == 2
    assert run["nodes"]["fix"]["output"] == {"fixed": "fix", "attempt": 1}
    assert stack.effects("a") == 1 and stack.effects("side") == 1, "outputs before it are kept"
    assert stack.effects("fix.attempts") == 2 and stack.effects("c") == 1
    timeline = json.loads(cli(stack, "history", run_id, "--json").stdout)
    retried = [r for r in timeline if r["event"] == "run.retried"]
    assert len(retried) == 1 and retried[0]["detail"]["from"] == ["fix"]
    assert timeline[-1]["run_attempt"] == 2


def test_bulk_retry_by_status_and_blueprint(stack: Stack) -> None:
    runs = [_failed_fixme(stack) for _ in range(2)]
    other = stack.client.start("linear", {}).result(timeout=30)
    stack.redis.delete(f"{stack.iso.redis_prefix}broken:fix")
    out = cli(stack, "retry", "--status", "failed", "--blueprint", "fixme")
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["runs"]) == sorted(runs)
    for run_id in runs:
        assert stack.client.handle(run_id).result(timeout=30)["status"] == "completed"
    assert stack.store.get_run(other["run_id"]).attempt == 1


def test_pause_holds_the_next_node_and_resume_continues(stack: Stack) -> None:
    handle = stack.client.start("gated", {})
    stack.wait_for(lambda: stack.effects("gate.started") == 1, what="gate running")
    out = cli(stack, "pause", handle.run_id)
    assert out.returncode == 0, out.stderr
    stack.wait_for(lambda: stack.effects("gate") == 1, what="the node in flight finishes")
    stack.wait_for(lambda: stack.store.get_run(handle.run_id).status == "paused", what="paused")
    time.sleep(1.5)
    assert stack.node_status(handle.run_id, "last") == "pending", "nothing new starts"
    assert stack.effects("last") == 0
    assert "paused" in cli(stack, "status", handle.run_id).stdout
    assert cli(stack, "pause", handle.run_id).returncode == 1, "it is paused already"

    assert cli(stack, "resume", handle.run_id).returncode == 0
    run = handle.result(timeout=30)
    assert run["status"] == "completed" and stack.effects("last") == 1


@on_both_brokers
def test_a_dead_lettered_start_is_listed_and_replayed_once(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(FLOWBRIDGE_BLUEPRINTS_RELOAD_S="0.5")
    bps = stack.iso.tmp_path / "blueprints"
    bps.mkdir()
    stack.env["FLOWBRIDGE_BLUEPRINTS"] = str(bps)
    stack.start_bridge()
    stack.start_worker()
    stack.produce({"v": 1, "type": "start", "blueprint": "later", "input": {"n": 1}}, key="k1")
    stack.wait_for(lambda: len(stack.read_topic("dlq", 1, timeout=2)) == 1, what="dead-lettered")
    # A start that names its run: rejected, it leaves that run failed (a waiting client hears).
    named = {"v": 1, "type": "start", "run_id": "r-later", "blueprint": "later", "input": {}}
    stack.produce(named, key="r-later")
    assert stack.client.handle("r-later").result(timeout=30)["status"] == "failed"
    refused = cli(stack, "retry", "r-later")
    assert refused.returncode == 1 and "replay its DLQ record" in refused.stderr

    listed = cli(stack, "dlq", "list", "--json", "--reason", "unknown blueprint")
    assert listed.returncode == 0, listed.stderr
    letter, named_letter = json.loads(listed.stdout)
    assert json.loads(named_letter["value"])["run_id"] == "r-later"
    assert "unknown blueprint 'later'" in letter["reason"]
    assert letter["source"]["topic"] == stack.settings.topic("jobs")
    assert json.loads(letter["value"])["blueprint"] == "later"
    assert cli(stack, "dlq", "list", "--reason", "no such reason", "--json").stdout.strip() == "[]"
    shown = json.loads(cli(stack, "dlq", "show", letter["ref"]).stdout)
    assert shown == letter
    dry = cli(stack, "dlq", "replay", "--offset", letter["ref"], "--dry-run")
    assert json.loads(dry.stdout)["replayed"][0]["ref"] == letter["ref"]

    # Deploy the missing blueprint, then replay: the start runs, once, however often replayed.
    (bps / "later.json").write_text(
        json.dumps({"id": "later", "nodes": [{"id": "x", "uses": "echo"}], "edges": []})
    )
    stack.wait_for(
        lambda: b"later@" in (stack.iso.tmp_path / "bridge.log").read_bytes(), what="reload"
    )
    for _ in range(2):
        out = cli(stack, "dlq", "replay", "--all")
        assert out.returncode == 0, out.stderr

    def later_runs() -> list[str]:
        return sorted(
            r.run_id
            for r in stack.store.list_runs(limit=100)
            if r.blueprint_id == "later" and r.run_id != "r-later"
        )

    stack.wait_for(lambda: later_runs(), what="the replayed start")
    (run_id,) = later_runs()
    named_run = stack.client.handle("r-later").result(timeout=30)
    assert named_run["status"] == "completed", "the replay started the run it had named"
    kinds = [h.kind for h in stack.store.get_history("r-later")]
    assert kinds.count("run.created") == 2 and kinds.count("run.completed") == 1
    assert stack.client.handle(run_id).result(timeout=30)["status"] == "completed"
    time.sleep(1)
    assert len(later_runs()) == 1, "a replay is idempotent by the original's position"
    assert stack.effects("x") == 2, "one run per original record"
