"""Parsing of jobs-topic messages: every accepted shape and every rejection reason."""

from __future__ import annotations

import json

import pytest

from bridge.errors import MessageError
from bridge.messages import CancelJob, NodeJob, ResumeJob, StartJob, parse_event, parse_job


def parse(obj: object) -> object:
    return parse_job(json.dumps(obj).encode(), max_bytes=1 << 20)


def test_start_node_cancel_and_flowcraft_shapes() -> None:
    assert parse(
        {"v": 1, "type": "start", "blueprint": "b", "version": 2, "input": {"x": 1}}
    ) == StartJob(run_id=None, blueprint="b", version="2", input={"x": 1})
    assert parse({"v": 1, "type": "node", "run_id": "r", "node": "n", "attempt": 2}) == NodeJob(
        "r", "n", 2
    )
    assert parse({"v": 1, "type": "cancel", "run_id": "r"}) == CancelJob("r")
    assert parse({"runId": "r", "blueprintId": "b", "nodeId": "n"}) == NodeJob(
        "r", "n", None, "b", flowcraft=True
    )
    assert parse({"v": 1, "type": "node", "run_id": "r", "node": "n", "iteration": 3}) == NodeJob(
        "r", "n", iteration=3
    )


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"v": 1, "type": "node", "run_id": "r"}, "missing required field 'node'"),
        ({"v": 1, "type": "node", "run_id": "r", "node": "n", "attempt": 0}, "integer >= 1"),
        ({"v": 1, "type": "node", "run_id": "r", "node": "n", "attempt": True}, "integer >= 1"),
        ({"v": True, "type": "start", "blueprint": "b"}, "unsupported message version"),
        ({"v": 1, "type": "start", "blueprint": "b", "version": 1.5}, "'version' must be"),
        ({"v": 1, "type": "start", "blueprint": "has space"}, "not a valid id"),
        ({"v": 1, "type": "cancel", "run_id": "r", "reason": 3}, "'reason' must be a string"),
        ({"v": 1, "type": "dance"}, "unknown type 'dance'"),
    ],
)
def test_rejections_name_the_problem(obj: object, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        parse(obj)


def test_rejected_start_keeps_its_run_id_so_the_run_can_be_marked_failed() -> None:
    with pytest.raises(MessageError) as info:
        parse({"v": 1, "type": "start", "run_id": "r1", "blueprint": "b", "input": 3})
    assert (info.value.run_id, info.value.is_start) == ("r1", True)


def test_size_limit_and_tombstone() -> None:
    with pytest.raises(MessageError, match="over FLOWBRIDGE_MAX_MESSAGE_BYTES=10"):
        parse_job(b'{"v": 1, "type": "x"}', max_bytes=10)
    with pytest.raises(MessageError, match="no value"):
        parse_job(None, max_bytes=10)


def test_a_resume_on_the_events_topic() -> None:
    def ev(obj: dict) -> object:
        return parse_event(json.dumps(obj).encode(), max_bytes=1 << 20)

    base = {"v": 1, "type": "resume", "run_id": "r", "node": "wait-for-approval"}
    assert ev({**base, "output": {"ok": 1}, "action": "approve", "event_id": "e1"}) == ResumeJob(
        "r", "wait-for-approval", "e1", {"ok": 1}, "approve"
    )
    assert ev(base) == ResumeJob("r", "wait-for-approval", None)
    with pytest.raises(MessageError, match="'action' must be a non-empty string"):
        ev({**base, "action": 3})
    with pytest.raises(MessageError, match="'node' must be a non-empty string"):
        ev({**base, "node": ""})
