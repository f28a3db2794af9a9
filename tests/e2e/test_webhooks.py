"""Webhook calls through the web process: a real bridge, worker and ``python -m bridge.web``.

The ``webhook`` blueprint (tests/apps/builtin_nodes.py) is ``hook -> wait-for-call
(eventName webhook:hook) -> next``; ``next`` passes the wait's output on.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tasks.webhooks import webhook_signature
from tests.conftest import Stack

pytestmark = pytest.mark.e2e

SECRET = "webhook-s3cret"
TOKEN = "operator-token"


def post(
    url: str,
    body: bytes = b"",
    *,
    content_type: str | None = "application/json",
    key: str | None = None,
    token: str | None = None,
) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method="POST")
    if content_type:
        req.add_header("Content-Type", content_type)
    if key:
        req.add_header("Idempotency-Key", key)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def waiting_hook(stack: Stack, run_input: dict[str, Any]) -> tuple[str, str]:
    """Start a ``webhook`` run; its id and the URL its webhook node gave, once the wait waits."""
    handle = stack.client.start("webhook", run_input)
    stack.wait_for(
        lambda: stack.node_status(handle.run_id, "wait-for-call") == "waiting",
        what="the wait to park",
    )
    hook = stack.client.get_run(handle.run_id)["nodes"]["hook"]["output"]
    assert hook["event"] == "webhook:hook"
    return handle.run_id, str(hook["url"])


def with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query), **params)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def events(stack: Stack, run_id: str, kind: str) -> list[Any]:
    return [h.data for h in stack.store.get_history(run_id) if h.kind == kind]


def test_a_signed_call_completes_the_run_once_and_a_wrong_signature_is_refused(
    stack_factory: Callable[..., Stack],
) -> None:
    from flowbridge.dev import free_port

    port = free_port()
    stack = stack_factory(
        FLOWBRIDGE_WEBHOOK_SECRET=SECRET,
        FLOWBRIDGE_WEBHOOK_BASE_URL=f"http://127.0.0.1:{port}",
        FLOWBRIDGE_MAX_MESSAGE_BYTES="4096",
    )
    stack.start_bridge()
    stack.start_worker()
    base = stack.start_web(port=port, FLOWBRIDGE_WEB_TOKEN=TOKEN)
    run_id, url = waiting_hook(stack, {"order": 42})
    sig = webhook_signature(SECRET, run_id, "hook")
    assert url == f"{base}/webhooks/{run_id}/hook?sig={sig}"

    body = json.dumps({"paid": True}).encode()
    unsigned = f"{base}/webhooks/{run_id}/hook"
    assert post(with_query(url, sig="0" * 64), body)[0] == 403
    assert post(unsigned, body)[0] == 403
    assert post(unsigned, body, token=TOKEN)[0] == 403, "a signature, not operator credentials"
    assert post(f"{base}/webhooks/{run_id}/wait-for-call?sig={sig}", body)[0] == 403, (
        "signed for another node"
    )
    other = webhook_signature(SECRET, run_id, "wait-for-call")
    code, refused = post(f"{base}/webhooks/{run_id}/wait-for-call?sig={other}", body)
    assert code == 400 and "its webhook nodes: hook" in refused["detail"]
    nope = webhook_signature(SECRET, "no-such-run", "hook")
    assert post(f"{base}/webhooks/no-such-run/hook?sig={nope}", body)[0] == 404
    assert post(url, b"x" * 5000, content_type="text/plain")[0] == 413
    assert stack.node_status(run_id, "wait-for-call") == "waiting", "nothing reached the run"

    # With the bridge stopped both calls wait in Kafka: the second is a true duplicate.
    stack.stop("bridge")
    call = with_query(url, ref="A-1")
    first = post(call, body, key="pay-42")
    again = post(call, body, key="pay-42")
    answer = {"run_id": run_id, "event": "webhook:hook", "event_id": first[1]["event_id"]}
    assert first == (202, answer) and again == (202, answer)
    stack.start_bridge()

    stack.wait_for(
        lambda: stack.client.get_run(run_id)["status"] == "completed", what="the run to complete"
    )
    run = stack.client.get_run(run_id)
    payload = {
        "body": {"paid": True},
        "query": {"ref": "A-1"},
        "headers": {"content-type": "application/json"},
    }
    assert run["nodes"]["wait-for-call"]["output"] == payload
    assert run["nodes"]["next"]["output"] == payload
    assert stack.effects("next") == 1
    stack.wait_for(
        lambda: events(stack, run_id, "event.duplicate"), what="the second call to be deduped"
    )
    assert [e["id"] for e in events(stack, run_id, "event.matched")] == [answer["event_id"]]

    # A retry after the run finished gets the first answer; another call is refused.
    assert post(call, body, key="pay-42") == (202, answer)
    code, refused = post(call, body, key="pay-43")
    assert code == 409 and "completed" in refused["detail"]
    assert stack.effects("next") == 1

    with urllib.request.urlopen(f"{base}/openapi.json", timeout=10) as r:
        spec = json.loads(r.read())
    assert "/webhooks/{run_id}/{node_id}" in spec["paths"]
    log = (stack.iso.tmp_path / "web.log").read_text()
    assert SECRET not in log and sig not in log


def test_without_a_secret_a_call_needs_the_web_processs_credentials(stack: Stack) -> None:
    base = stack.start_web(FLOWBRIDGE_WEB_TOKEN=TOKEN)
    run_id, url = waiting_hook(stack, {})
    assert url == f"http://localhost:8000/webhooks/{run_id}/hook", "unsigned, as before"
    call = f"{base}/webhooks/{run_id}/hook"

    assert post(call, b"done", content_type="text/plain")[0] == 401
    assert post(call, b"done", content_type="text/plain", token="wrong")[0] == 401
    code, answer = post(call, b"done", content_type="text/plain", token=TOKEN)
    assert code == 202 and answer["event"] == "webhook:hook" and answer["event_id"]

    stack.wait_for(
        lambda: stack.client.get_run(run_id)["status"] == "completed", what="the run to complete"
    )
    assert stack.client.get_run(run_id)["nodes"]["next"]["output"] == {
        "body": {"text": "done"},
        "query": {},
        "headers": {"content-type": "text/plain"},
    }
