"""What Flower sees: Celery task events of a worker started with ``-E``.

A node that fails for good is a failed task (``task-failed``, with the node's
error); a retried attempt and a completed one are succeeded tasks whose result
says ``retry`` or ``completed``. The engine's own retry accounting is unchanged. A code
workflow's activity that failed for good is a failed task too.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def test_a_node_that_fails_for_good_is_a_failed_task_in_celery_events(stack_factory: Any) -> None:
    stack = stack_factory()
    stack.start_bridge()
    events: list[dict[str, Any]] = []
    app = stack.celery
    ready = threading.Event()
    conn = app.connection_for_read()
    receiver = app.events.Receiver(conn, handlers={"*": events.append})

    def capture() -> None:
        ready.set()
        with contextlib.suppress(Exception):  # the connection closes under it at the end
            receiver.capture(limit=None, timeout=60, wakeup=True)

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    ready.wait(10)
    time.sleep(0.5)  # subscribed before the worker sends anything
    stack.start_worker(events=True)

    stack.redis.set(f"{stack.iso.redis_prefix}broken:fix", 1)
    failed = stack.client.start("fixme", {}).result(timeout=30)
    retried = stack.client.start("retry", {}).result(timeout=30)
    saga = stack.client.start("e2e-wf-saga", {}).result(timeout=60)
    assert failed["status"] == "failed" and retried["status"] == "completed"
    assert saga["status"] == "failed", "its refused activity failed it after compensating"
    assert retried["nodes"]["flaky"]["attempts"] == 3, "the engine's retries are its own"

    def seen(kind: str, task_prefix: str) -> list[dict[str, Any]]:
        return [e for e in events if e["type"] == kind and e["uuid"].startswith(task_prefix)]

    fix_task = f"{failed['run_id']}:fix:0:1"
    stack.wait_for(lambda: seen("task-failed", fix_task), what="task-failed of the node")
    stack.wait_for(
        lambda: seen("task-failed", f"{saga['run_id']}:"), what="task-failed of the activity"
    )
    receiver.should_stop = True
    (refused,) = seen("task-failed", f"{saga['run_id']}:")
    assert "activity e2e-wf-refuse" in refused["exception"] and refused["uuid"].endswith(":2")
    (event,) = seen("task-failed", fix_task)
    assert "NodeFailedError" in event["exception"] and "fix is broken" in event["exception"]
    assert not seen("task-failed", f"{failed['run_id']}:a:")
    flaky = seen("task-succeeded", f"{retried['run_id']}:flaky:")
    assert sorted(e["result"] for e in flaky) == ["'completed'", "'retry'", "'retry'"]
    assert stack.store.get_node(failed["run_id"], "fix").attempts == 1, "failed once, no redelivery"
    conn.release()
