"""The web process: its JSON API behind authentication, and its pages in a real browser.

The browser is Debian's ``chromium`` driven by Selenium through Debian's
``chromium-driver`` (``make test`` installs both): missing, the browser test
skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, ROOT, Stack, missing_service

pytestmark = pytest.mark.e2e

TOKEN = "s3cret-token"
SCREENSHOT = ROOT / "docs" / "web-ui.png"


def http(
    url: str, *, method: str = "GET", token: str | None = TOKEN, body: Any = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if Path(name).exists() else None)
        if found:
            return found
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Debian chromium with a fresh profile, driven through chromium-driver."""
    chromium = _binary("chromium", "/usr/bin/chromium")
    driver = _binary("chromedriver", "/usr/bin/chromedriver")
    if chromium is None or driver is None:
        missing_service("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    b = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    b.set_page_load_timeout(30)
    try:
        yield b
    finally:
        b.quit()


def test_the_web_process_refuses_to_start_without_credentials(stack: Stack) -> None:
    out = subprocess.run(
        [str(BIN / "python"), "-m", "bridge.web"],
        env={**stack.env, "PORT": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "FLOWBRIDGE_WEB_TOKEN" in out.stderr and "FLOWBRIDGE_WEB_LOCAL_ONLY" in out.stderr


def test_the_json_api_needs_the_token_and_answers_through_the_queries(stack: Stack) -> None:
    run = stack.client.start("linear", {"n": 1}).result(timeout=30)
    url = stack.start_web(FLOWBRIDGE_WEB_TOKEN=TOKEN)

    assert http(f"{url}/healthz", token=None) == (200, {"ok": True})
    assert http(f"{url}/api/runs", token=None)[0] == 401
    assert http(f"{url}/api/runs", token="wrong")[0] == 401
    assert (
        http(f"{url}/api/runs/{run['run_id']}/pause", method="POST", token=None, body={})[0] == 401
    )
    code, page = http(f"{url}/api/runs?status=completed&limit=1")
    assert code == 200 and page["runs"][0]["run_id"] == run["run_id"]
    code, view = http(f"{url}/api/runs/{run['run_id']}")
    assert (
        code == 200
        and view["status"] == "completed"
        and view["nodes"]["c"]["status"] == "completed"
    )
    code, tl = http(f"{url}/api/runs/{run['run_id']}/timeline")
    assert [r["node"] for r in tl if r["event"] == "node.completed"] == ["a", "b", "c"]
    assert http(f"{url}/api/runs/nope")[0] == 404
    code, refused = http(f"{url}/api/runs/{run['run_id']}/pause", method="POST", body={})
    assert code == 409 and "is completed" in refused["detail"]
    code, spec = http(f"{url}/openapi.json", token=None)
    assert code == 200 and "/api/runs/{run_id}/{action}" in spec["paths"]
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        assert (
            b'flowbridge_web_requests_total{method="GET",route="/api/runs",status="401"}'
            in r.read()
        )


def shown(browser: Any, element_id: str) -> str:
    """The text of ``#element_id`` once the page that has it loaded (a form posts, then redirects)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    found = WebDriverWait(browser, 30).until(
        expected_conditions.presence_of_element_located((By.ID, element_id))
    )
    return str(found.text)


def test_fail_fix_and_retry_a_run_from_the_browser(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    stack.redis.set(f"{stack.iso.redis_prefix}broken:fix", 1)
    run = stack.client.start("fixme", {"order": 42}).result(timeout=30)
    assert run["status"] == "failed"
    stack.produce(b"not json at all", key="bad")
    url = stack.start_web(FLOWBRIDGE_WEB_TOKEN=TOKEN)

    browser.get(f"{url}/")
    assert browser.current_url.endswith("/login"), "pages need a login"
    browser.find_element(By.ID, "token").send_keys("wrong")
    browser.find_element(By.ID, "login").click()
    assert "not right" in shown(browser, "wrong")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login").click()

    row = shown(browser, "runs")
    assert run["run_id"] in row and "failed" in row
    browser.find_element(By.LINK_TEXT, run["run_id"]).click()
    assert "fix is broken" in shown(browser, "error")
    status = {
        g.get_attribute("data-node"): g.get_attribute("data-status")
        for g in browser.find_elements(By.CSS_SELECTOR, "#dag g.node")
    }
    assert status == {"a": "completed", "fix": "failed", "c": "not reached", "side": status["side"]}
    assert "node.failed" in browser.find_element(By.ID, "timeline").text

    stack.redis.delete(f"{stack.iso.redis_prefix}broken:fix")  # "fix the node"
    Select(browser.find_element(By.ID, "retry-node")).select_by_visible_text("fix")
    browser.find_element(By.ID, "retry").click()
    assert "retry requested" in shown(browser, "message")
    deadline = time.monotonic() + 30
    while browser.find_element(By.ID, "status").text != "completed":
        assert time.monotonic() < deadline, browser.find_element(By.ID, "status").text
        time.sleep(0.3)
        browser.get(f"{url}/runs/{run['run_id']}")
    assert browser.find_element(By.ID, "attempt").text == "2"
    assert (
        browser.find_element(By.CSS_SELECTOR, '#dag g[data-node="c"]').get_attribute("data-status")
        == "completed"
    )
    assert "run.retried" in browser.find_element(By.ID, "timeline").text
    if os.environ.get("FLOWBRIDGE_UPDATE_SCREENSHOT") == "1":
        browser.save_screenshot(str(SCREENSHOT))

    browser.get(f"{url}/dlq")
    assert "value is not JSON" in shown(browser, "dlq")
    browser.find_element(By.CSS_SELECTOR, "button.replay").click()
    assert "replayed" in shown(browser, "message")
    stack.wait_for(
        lambda: len(stack.read_topic("dlq", 2, timeout=2)) == 2, what="the replay failed again"
    )
