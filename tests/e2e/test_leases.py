"""Node leases with real workers: a long node runs once past stalled_after_s; a dead worker's
node is taken over as soon as its lease expired (docs/semantics.md, "Node leases")."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.conftest import BIN, ROOT, Stack, on_both_stores

pytestmark = pytest.mark.e2e

#: The reconciler runs twice a second; only it may take a node over (no dispatch check).
FAST = {
    "FLOWBRIDGE_RECONCILE_INTERVAL_S": "0.5",
    "FLOWBRIDGE_DISPATCH_DEADLINE_S": "0",
    "FLOWBRIDGE_LEASE_S": "1.5",
}


def _history(stack: Stack, run_id: str) -> list[tuple[str, str | None, object]]:
    return [(h.kind, h.node_id, h.data) for h in stack.store.get_history(run_id)]


@on_both_stores
def test_a_node_running_past_stalled_after_with_a_live_lease_runs_once(
    stack_factory: Callable[..., Stack],
) -> None:
    # Without leases the reconciler re-emits `long` after 2 s and the second pool slot (or the
    # other worker) takes it over: it would run two or three times, concurrently.
    stack = stack_factory(FLOWBRIDGE_STALLED_AFTER_S="2", **FAST)
    stack.start_bridge()
    stack.start_worker("worker-1")
    stack.start_worker("worker-2")
    stack.start_beat()
    handle = stack.client.start("leased", {})
    stack.wait_for(lambda: stack.effects("long.calls") == 1, what="long started")
    # While it runs, status says where and for how long its lease holds.
    time.sleep(3.0)  # past stalled_after_s: a lease-less node would have been re-emitted
    out = subprocess.run(
        [str(BIN / "flowbridge"), "status", handle.run_id],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.strip().startswith("long "))
    assert "running" in line and " on worker-" in line and "s left)" in line, out
    run = handle.result(timeout=60)

    assert run["status"] == "completed", run
    assert stack.effects("long.calls") == 1, "the long node's code ran once"
    assert stack.effects("long") == 1
    long = stack.store.get_node(handle.run_id, "long")
    assert long is not None and (long.attempts, long.deliveries) == (1, 1)
    kinds = [k for k, _, _ in _history(stack, handle.run_id)]
    assert "run.reconciled" not in kinds and "node.busy" not in kinds, kinds


@on_both_stores
def test_a_killed_workers_node_is_taken_over_once_its_lease_expired(
    stack_factory: Callable[..., Stack],
) -> None:
    # stalled_after_s is long: the takeover comes from the lapsed lease, not the old rule.
    stack = stack_factory(FLOWBRIDGE_STALLED_AFTER_S="120", **FAST)
    stack.start_bridge()
    stack.start_worker("worker-1", concurrency=1)
    stack.start_beat()
    handle = stack.client.start("leased", {})
    stack.wait_for(lambda: stack.effects("long.calls") == 1, what="long started")
    pool = int(stack.redis.get(f"{stack.iso.redis_prefix}pid:long") or 0)
    assert pool > 1
    stack.start_worker("worker-2")  # it also runs the reconciler's passes from now on
    # The whole worker at once, as an OOM kill of its container: nothing requeues the task.
    main = stack.procs["worker-1"].pid
    os.kill(main, signal.SIGKILL)
    os.kill(pool, signal.SIGKILL)
    killed_at = time.time()
    stack.procs["worker-1"].wait(10)
    run = handle.result(timeout=60)
    took = time.time() - killed_at
    print(f"lease takeover: the run completed {took:.1f}s after the kill (the node takes 6 s)")

    assert run["status"] == "completed", run
    assert stack.effects("long.calls") == 2, "node code runs again after a crash (at least once)"
    assert stack.effects("long") == 1, "its effect is applied once"
    assert stack.effects("last") == 1
    long = stack.store.get_node(handle.run_id, "long")
    assert long is not None and (long.attempts, long.deliveries) == (1, 2)
    assert long.claimed_by is not None and long.claimed_by.startswith("worker-2")
    kinds = [k for k, _, _ in _history(stack, handle.run_id)]
    assert kinds.count("run.reconciled") == 1, kinds
    # The lease (1.5 s), a reconciler pass, the relay and the 6 s node: far under 120 s.
    assert took < 30, f"taken over {took:.1f}s after the kill"
