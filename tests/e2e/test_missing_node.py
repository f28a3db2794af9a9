"""A node missing from the worker that got it (a rolling deploy, workers with different code on
the same queues) is requeued for a while, may run on a worker that has it, and otherwise fails
naming the workers that lacked it; processes with different registries warn at start-up."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Stack

pytestmark = pytest.mark.e2e

#: The example's nodes only: none of the test blueprints' nodes.
OTHER_APP = "examples.shop"


def test_a_node_no_worker_has_fails_after_the_wait_naming_the_workers(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(FLOWBRIDGE_MISSING_NODE_S="2")
    stack.start_bridge()
    stack.start_worker("old", FLOWBRIDGE_APP=OTHER_APP)
    run = stack.client.start("linear", {}).result(timeout=60)

    assert run["status"] == "failed", run
    assert "no node registered for uses 'echo' on worker(s) old-" in run["error"]
    assert "FLOWBRIDGE_MISSING_NODE_S" in run["error"]
    assert run["nodes"]["a"]["attempts"] >= 2, "requeued before failing"


def test_a_node_missing_here_runs_on_a_worker_that_has_it(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(FLOWBRIDGE_MISSING_NODE_S="60")
    stack.start_bridge()
    stack.start_worker("old", FLOWBRIDGE_APP=OTHER_APP)
    handle = stack.client.start("linear", {})
    stack.wait_for(
        lambda: (rec := stack.store.get_node(handle.run_id, "a")) is not None and rec.attempts >= 2,
        what="the node to be requeued",
    )
    stack.stop("old")
    stack.start_worker("new")
    run = handle.result(timeout=60)

    assert run["status"] == "completed", run
    assert stack.effects("a") == 1

    log = (stack.iso.tmp_path / "new.log").read_text()
    assert "shares the shard queues" not in log, "the old worker withdrew when it stopped"


def test_workers_with_different_nodes_warn_at_start_up(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory()
    stack.start_worker("one", FLOWBRIDGE_APP=OTHER_APP)
    stack.start_worker("two")
    log = (stack.iso.tmp_path / "two.log").read_text()
    assert f"worker one-{stack.iso.prefix}@" in log
    assert "shares the shard queues" in log
    assert "it lacks nodes this worker has: " in log and "echo" in log
    assert "it has nodes this worker lacks: charge-card" in log
