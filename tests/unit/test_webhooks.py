"""Webhook calls: the URL's signature, the event's payload and id, which calls a run takes."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from fastapi import HTTPException

from bridge.api import Queries
from bridge.web.webhooks import MAX_KEY_CHARS, check_call, event_id_of, payload_of, webhook_nodes
from flowbridge.testing import Runner
from state.records import Run
from tasks.blueprint import Blueprint
from tasks.registry import BlueprintRegistry, NodeRegistry
from tasks.settings import Settings
from tasks.webhooks import valid_signature, webhook_signature, webhook_url

HOOK = {
    "id": "hook",
    "nodes": [
        {"id": "hook", "uses": "webhook"},
        {"id": "other-hook", "uses": "webhook"},
        {"id": "wait", "uses": "wait", "params": {"eventName": "webhook:hook"}},
    ],
    "edges": [{"source": "hook", "target": "wait"}, {"source": "wait", "target": "other-hook"}],
}


def runner(**env: str) -> Runner:
    blueprints = BlueprintRegistry()
    blueprints.register(Blueprint.from_dict(HOOK))
    return Runner(node_registry=NodeRegistry(), blueprint_registry=blueprints, env=env)


def test_the_signature_is_an_hmac_of_run_and_node_with_the_secret() -> None:
    expected = hmac.new(b"k3y", b"r1/hook", hashlib.sha256).hexdigest()
    assert webhook_signature("k3y", "r1", "hook") == expected
    assert valid_signature("k3y", "r1", "hook", expected)
    assert valid_signature("k3y", "r1", "hook", expected.upper())
    assert not valid_signature("k3y", "r1", "other", expected)
    assert not valid_signature("k3y", "r2", "hook", expected)
    assert not valid_signature("other", "r1", "hook", expected)
    assert not valid_signature("k3y", "r1", "hook", None)
    assert not valid_signature("k3y", "r1", "hook", "")


def test_the_url_is_signed_only_with_a_secret() -> None:
    assert webhook_url("http://h:1/", "r1", "hook") == "http://h:1/webhooks/r1/hook"
    signed = webhook_url("http://h:1", "r1", "hook", "k3y")
    assert signed == f"http://h:1/webhooks/r1/hook?sig={webhook_signature('k3y', 'r1', 'hook')}"


def test_the_secret_is_read_once_and_never_shown() -> None:
    settings = Settings.from_env({"FLOWBRIDGE_WEBHOOK_SECRET": " k3y "})
    assert settings.webhook_secret == "k3y"
    assert "k3y" not in repr(settings)
    assert Settings.from_env({}).webhook_secret is None


def test_the_webhook_node_outputs_a_signed_url_when_workers_have_the_secret() -> None:
    r = runner(FLOWBRIDGE_WEBHOOK_SECRET="k3y", FLOWBRIDGE_WEBHOOK_BASE_URL="https://hooks.example")
    run_id = r.start("hook", {})
    out = r.result(run_id)["nodes"]["hook"]["output"]
    sig = webhook_signature("k3y", run_id, "hook")
    assert out == {
        "url": f"https://hooks.example/webhooks/{run_id}/hook?sig={sig}",
        "event": "webhook:hook",
    }


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"paid": true}', "application/json", {"paid": True}),
        (b'{"paid": true}', "application/json; charset=utf-8", {"paid": True}),
        (b'{"paid": true}', None, {"paid": True}),
        (b'{"a": 1}', "application/vnd.api+json", {"a": 1}),
        (b"[1, 2]", "application/json", [1, 2]),
        (b"not json", "application/json", {"text": "not json"}),
        (b"a=1&b=2", "application/x-www-form-urlencoded", {"text": "a=1&b=2"}),
        (b"123", "text/plain", {"text": "123"}),
        (b"\xff\xfe", "application/octet-stream", {"text": "\ufffd\ufffd"}),
        (b"", "application/json", None),
    ],
)
def test_the_body_is_json_when_it_is_json_else_text(
    body: bytes, content_type: str | None, expected: object
) -> None:
    payload = payload_of(body, content_type, {})
    assert payload["body"] == expected


def test_the_payload_keeps_the_query_without_the_signature_and_only_the_content_type() -> None:
    payload = payload_of(b"{}", "application/json", {"sig": "abc", "order": "42"})
    assert payload == {
        "body": {},
        "query": {"order": "42"},
        "headers": {"content-type": "application/json"},
    }
    assert payload_of(b"", None, {})["headers"] == {}


def test_an_idempotency_key_fixes_the_event_id_per_node() -> None:
    assert event_id_of("hook", None) is None and event_id_of("hook", "") is None
    first = event_id_of("hook", "order 42 / try #1")
    assert first == event_id_of("hook", "order 42 / try #1")
    assert first is not None and first.startswith("webhook:") and " " not in first
    assert first != event_id_of("other-hook", "order 42 / try #1")
    assert first != event_id_of("hook", "order 43")
    with pytest.raises(HTTPException) as refused:
        event_id_of("hook", "k" * (MAX_KEY_CHARS + 1))
    assert refused.value.status_code == 400


def test_the_webhook_nodes_of_a_run_are_read_from_its_snapshot() -> None:
    def run(snapshot: dict[str, object]) -> Run:
        return Run(
            run_id="r", blueprint_id="x", version="1", status="running", input={}, snapshot=snapshot
        )

    assert webhook_nodes(run(HOOK)) == ["hook", "other-hook"]
    assert webhook_nodes(run({"kind": "workflow"})) == [] and webhook_nodes(run({})) == []


def test_a_call_is_refused_for_no_run_a_node_that_is_no_webhook_and_a_finished_run() -> None:
    r = runner()
    run_id = r.start("hook", {})
    queries = Queries(r.rt.store)
    assert check_call(queries, run_id, "hook", None) is False

    with pytest.raises(HTTPException) as refused:
        check_call(queries, "nope", "hook", None)
    assert refused.value.status_code == 404

    with pytest.raises(HTTPException) as refused:
        check_call(queries, run_id, "wait", None)
    assert refused.value.status_code == 400
    assert "its webhook nodes: hook, other-hook" in str(refused.value.detail)

    key = event_id_of("hook", "k1")
    assert key is not None
    assert r.signal(run_id, "webhook:hook", {"body": 1}, event_id=key) == "matched"
    assert r.result(run_id)["status"] == "completed"
    with pytest.raises(HTTPException) as refused:
        check_call(queries, run_id, "hook", None)
    assert refused.value.status_code == 409 and "completed" in str(refused.value.detail)
    with pytest.raises(HTTPException) as refused:
        check_call(queries, run_id, "hook", event_id_of("hook", "another key"))
    assert refused.value.status_code == 409
    # A retry of the call that completed it is answered as the first call was.
    assert check_call(queries, run_id, "hook", key) is True
