"""One trace from a Kafka record through the bridge, Celery and nodes to the records they emit.

The processes export spans with the OpenTelemetry SDK to a file (tests/apps/tracing.py);
nothing of Kafka or Celery is mocked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Stack

pytestmark = pytest.mark.e2e

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def _trace_id(record: Any) -> str:
    return dict(record.headers)["traceparent"].decode().split("-")[1]


def test_the_trace_context_goes_from_kafka_to_celery_to_nodes_to_emitted_records(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(FLOWBRIDGE_APP="tests.apps.e2e_nodes,tests.apps.tracing")
    spans_file = stack.iso.tmp_path / "spans.jsonl"
    stack.env["E2E_TRACE_FILE"] = str(spans_file)
    stack.start_bridge()
    stack.start_worker()
    run_id = "traced-run"
    stack.produce(
        {"v": 1, "type": "start", "run_id": run_id, "blueprint": "traced", "input": {}},
        key=run_id,
        headers=[("traceparent", f"00-{TRACE}-{PARENT}-01".encode())],
    )
    assert stack.client.handle(run_id).result(timeout=30)["status"] == "completed"

    emitted = [
        r
        for r in stack.read_topic("traced.events", 50, 5, full_topic="traced.events")
        if r.key == run_id.encode()
    ]
    assert len(emitted) == 1 and _trace_id(emitted[0]) == TRACE
    lifecycle = [r for r in stack.read_topic("runs", 2) if r.key == run_id.encode()]
    assert lifecycle and {_trace_id(r) for r in lifecycle} == {TRACE}

    def spans() -> list[dict[str, Any]]:
        if not spans_file.exists():
            return []
        return [json.loads(line) for line in spans_file.read_text().splitlines()]

    stack.wait_for(
        lambda: len([s for s in spans() if s["name"].startswith("flowbridge.node")]) >= 2,
        what="node spans",
    )
    found = spans()
    (bridge,) = [s for s in found if s["name"].startswith("flowbridge.bridge")]
    first = [s for s in found if s["name"] == "flowbridge.node first"]
    emit = [s for s in found if s["name"] == "flowbridge.node emit"]
    assert bridge["trace_id"] == TRACE and bridge["parent_id"] == PARENT
    assert first[0]["trace_id"] == TRACE and first[0]["parent_id"] == bridge["span_id"]
    assert emit[0]["trace_id"] == TRACE and emit[0]["parent_id"] == first[0]["span_id"]
    assert emit[0]["attributes"]["flowbridge.run_id"] == run_id
    assert emit[0]["attributes"]["flowbridge.outcome"] == "completed"
    assert first[0]["pid"] != bridge["pid"], "the node ran in a worker process"
    emitted_parent = dict(emitted[0].headers)["traceparent"].decode().split("-")[2]
    assert emitted_parent == emit[0]["span_id"], "the record continues the emitting attempt's span"
