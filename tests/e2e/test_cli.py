"""The CLI against a running stack: it checks runs before acting and says what it did."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time

import pytest

from tests.conftest import BIN, ROOT, Stack

pytestmark = pytest.mark.e2e


def cli(stack: Stack, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "flowbridge"), *args],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        **kw,  # type: ignore[call-overload]
    )


def test_cancel_and_signal_check_the_run_first(stack: Stack) -> None:
    for command in (["cancel", "ghost-run"], ["signal", "ghost-run", "approve"]):
        out = cli(stack, *command)
        assert out.returncode == 1, out
        assert "no run 'ghost-run'" in out.stderr
    time.sleep(1)  # had a message gone out, the bridge would have made a marker by now
    assert stack.store.get_run("ghost-run") is None, "no phantom cancelled run"

    done = stack.client.start("linear", {}).result(timeout=30)
    for command in (["cancel", done["run_id"]], ["signal", done["run_id"], "approve"]):
        out = cli(stack, *command)
        assert out.returncode == 1, out
        assert f"run {done['run_id']!r} is completed" in out.stderr

    forced = cli(stack, "cancel", "early-run", "--force")
    assert forced.returncode == 0, forced.stderr
    stack.wait_for(lambda: stack.store.get_run("early-run") is not None, what="the marker")
    assert stack.store.get_run("early-run").status == "cancelled"


def test_run_with_the_id_of_an_existing_run_says_so(stack: Stack) -> None:
    args = ["run", "linear", "--run-id", "again-1", "--input", '{"n": 1}', "--wait"]
    first = cli(stack, *args)
    assert first.returncode == 0, first.stderr
    assert first.stderr == "", "no progress lines when stderr is not a terminal"

    same = cli(stack, *args)
    assert same.returncode == 0
    assert "run 'again-1' already exists (linear@1, completed); it is not started again" in (
        same.stderr
    )
    assert json.loads(same.stdout)["run_id"] == "again-1"

    other = cli(stack, "run", "linear", "--run-id", "again-1", "--input", '{"n": 2}')
    assert other.returncode == 1
    assert "its blueprint or input differs" in other.stderr
    history = [h.kind for h in stack.store.get_history("again-1")]
    assert history.count("run.created") == 1


def test_run_wait_shows_progress_on_a_terminal(stack: Stack) -> None:
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(BIN / "flowbridge"), "run", "gated", "--wait", "--timeout", "60"],
            env=stack.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=secondary,
        )
        os.close(secondary)
        seen = b""
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([primary], [], [], 0.2)[0]:
                try:
                    seen += os.read(primary, 4096)
                except OSError:
                    break
        assert proc.stdout is not None
        run = json.loads(proc.stdout.read())
        assert proc.wait(10) == 0
    finally:
        os.close(primary)
    text = seen.decode(errors="replace")
    assert run["status"] == "completed"
    assert "nodes done" in text and "/3 nodes done" in text, text
    assert "now: gate (running, attempt 1)" in text, text
