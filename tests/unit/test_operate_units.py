"""Small pieces of operating runs: DLQ reason labels, the timeline view, web credentials."""

from __future__ import annotations

import base64

import pytest

from bridge.api.views import timeline
from bridge.metrics import reason_class
from bridge.web.auth import Auth
from bridge.web.settings import WebSettings
from state.errors import ConfigError
from state.records import HistoryEvent


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("unknown blueprint 'welcome'; registered: signup@1", "unknown blueprint '…'"),
        ("value is not JSON: Expecting value: line 1 column 1 (char 0)", "value is not JSON"),
        (
            "over FLOWBRIDGE_MAX_MESSAGE_BYTES=500000 (601234 bytes)",
            "over FLOWBRIDGE_MAX_MESSAGE_BYTES=N",
        ),
        ("unknown run 'x' (node job for 'a')", "unknown run '…'"),
    ],
)
def test_dlq_reasons_are_labelled_by_their_class(reason: str, label: str) -> None:
    assert reason_class(reason) == label


def test_the_timeline_says_which_attempt_of_the_run_each_event_is() -> None:
    events = [
        HistoryEvent(
            run_id="r", seq=1, at=1.0, kind="node.started", node_id="a", data={"attempt": 1}
        ),
        HistoryEvent(
            run_id="r", seq=2, at=2.0, kind="node.failed", node_id="a", data={"error": "boom"}
        ),
        HistoryEvent(
            run_id="r", seq=3, at=3.0, kind="run.retried", data={"attempt": 2, "from": ["a"]}
        ),
        HistoryEvent(
            run_id="r", seq=4, at=4.0, kind="node.started", node_id="a", data={"attempt": 1}
        ),
    ]
    rows = timeline(events)
    assert [r["run_attempt"] for r in rows] == [1, 1, 2, 2]
    assert rows[1]["error"] == "boom" and rows[2]["attempt"] == 2
    assert rows[2]["detail"] == {"from": ["a"]}


def test_the_web_process_needs_credentials_unless_local_only() -> None:
    with pytest.raises(ConfigError, match="FLOWBRIDGE_WEB_TOKEN"):
        WebSettings.from_env({})
    with pytest.raises(ConfigError, match="both"):
        WebSettings.from_env({"FLOWBRIDGE_WEB_USER": "ann"})
    local = WebSettings.from_env(
        {"FLOWBRIDGE_WEB_LOCAL_ONLY": "1", "FLOWBRIDGE_WEB_HOST": "0.0.0.0"}
    )
    assert local.host == "127.0.0.1" and Auth(local).allows(None, None)


def test_bearer_basic_and_session_cookies_are_checked() -> None:
    auth = Auth(
        WebSettings.from_env(
            {
                "FLOWBRIDGE_WEB_TOKEN": "t0k",
                "FLOWBRIDGE_WEB_USER": "ann",
                "FLOWBRIDGE_WEB_PASSWORD": "pw",
            }
        )
    )
    basic = "Basic " + base64.b64encode(b"ann:pw").decode()
    assert auth.allows("Bearer t0k", None) and auth.allows(basic, None)
    assert not auth.allows("Bearer nope", None) and not auth.allows(None, None)
    assert not auth.allows("Basic " + base64.b64encode(b"ann:no").decode(), None)
    cookie = auth.session(token="t0k")
    assert cookie is not None and "t0k" not in cookie and auth.allows(None, cookie)
    assert auth.session(token="wrong") is None and not auth.allows(None, "forged")
    assert Auth(auth.settings).allows(None, cookie) is False, "a cookie is per process"
