"""Bad input ends in the DLQ with a readable reason, and the bridge goes on with the next message."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.conftest import Stack, on_both_brokers

pytestmark = pytest.mark.e2e

#: The bridge's size limit in this test: below any broker's default topic limit.
MAX_BYTES = 500_000

BAD = [
    (b"not json at all", "value is not JSON"),
    (b"\xff\xfe\x00garbage", "value is not UTF-8"),
    (b"[1, 2, 3]", "value must be a JSON object, got list"),
    (json.dumps({"v": 1, "blueprint": "linear"}).encode(), "unknown type None"),
    (json.dumps({"v": 2, "type": "start", "blueprint": "linear"}).encode(), "unsupported message version v=2"),
    (json.dumps({"type": "start", "blueprint": "linear"}).encode(), "missing required field 'v'"),
    (json.dumps({"v": 1, "type": "start", "blueprint": 42}).encode(), "field 'blueprint' must be a string"),
    (json.dumps({"v": 1, "type": "start", "blueprint": "linear", "input": [1]}).encode(), "field 'input' must be a JSON object"),
    (json.dumps({"v": 1, "type": "start", "blueprint": "nope"}).encode(), "unknown blueprint 'nope'"),
    (json.dumps({"v": 1, "type": "node", "run_id": "no-such-run", "node": "a"}).encode(), "unknown run 'no-such-run'"),
    # Under a real Kafka's default topic limit (~1 MB), over the bridge's (set below).
    (json.dumps({"v": 1, "type": "start", "blueprint": "linear", "input": {"blob": "x" * 600_000}}).encode(), f"over FLOWBRIDGE_MAX_MESSAGE_BYTES={MAX_BYTES}"),
]  # fmt: skip


@on_both_brokers
def test_each_bad_message_goes_to_the_dlq_with_its_reason_and_the_bridge_goes_on(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(FLOWBRIDGE_MAX_MESSAGE_BYTES=str(MAX_BYTES))
    stack.start_bridge()
    stack.start_worker()
    good = stack.client.start("linear", {"before": True})
    good.result(timeout=30)
    for value, _ in BAD:
        stack.produce(value, key="bad")
    # A node job naming a node the run's blueprint does not have.
    # Same key as the others: one partition, so the DLQ keeps their order.
    stack.produce({"v": 1, "type": "node", "run_id": good.run_id, "node": "zzz"}, key="bad")
    after = stack.client.start("linear", {"after": True})

    assert after.result(timeout=30)["status"] == "completed", "the bridge kept consuming"
    dlq = stack.read_topic("dlq", len(BAD) + 1)
    assert len(dlq) == len(BAD) + 1
    by_offset = sorted(dlq, key=lambda r: int(dict(r.headers)["flowbridge-source-offset"]))
    for record, (value, reason) in zip(
        by_offset, [*BAD, (None, "unknown node 'zzz'")], strict=True
    ):
        headers = dict(record.headers)
        assert reason in headers["flowbridge-error"].decode(), headers["flowbridge-error"]
        assert headers["flowbridge-source-topic"].decode() == stack.settings.topic("jobs")
        if value is not None:
            assert record.value == value, "the message is dead-lettered unchanged"
    assert "has: a, b, c" in dict(by_offset[-1].headers)["flowbridge-error"].decode()
    assert stack.procs["bridge"].poll() is None, "bad input never stops the bridge"


@on_both_brokers
def test_rejected_start_with_a_run_id_marks_that_run_failed(stack: Stack) -> None:
    stack.produce(
        {"v": 1, "type": "start", "run_id": "r-unknown", "blueprint": "ghost", "input": {"n": 1}},
        key="r-unknown",
    )
    stack.produce(
        {"v": 1, "type": "start", "run_id": "r-badinput", "blueprint": "linear", "input": "text"},
        key="r-badinput",
    )
    unknown = stack.client.handle("r-unknown").result(timeout=30)
    bad_input = stack.client.handle("r-badinput").result(timeout=30)

    assert unknown["status"] == "failed"
    assert "unknown blueprint 'ghost'" in unknown["error"]
    assert (unknown["blueprint"], unknown["input"]) == ("ghost", {"n": 1}), "what was asked"
    assert bad_input["status"] == "failed"
    assert (bad_input["blueprint"], bad_input["input"]) == ("linear", "text")
    assert "field 'input' must be a JSON object" in bad_input["error"]
    assert len(stack.read_topic("dlq", 2)) == 2
