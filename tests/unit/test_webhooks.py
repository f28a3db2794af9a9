"""Webhook URLs: their signature with FLOWBRIDGE_WEBHOOK_SECRET."""

from __future__ import annotations

import hashlib
import hmac

from flowbridge.testing import Runner
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
