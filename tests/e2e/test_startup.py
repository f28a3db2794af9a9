"""Start-up fails loudly: a worker or beat with user code that does not import, or an invalid
blueprint, exits non-zero naming the cause; several blueprint directories all load."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, Stack

pytestmark = pytest.mark.e2e

CELERY = {
    "worker": [
        "worker",
        "--loglevel=INFO",
        "--concurrency=1",
        "--without-gossip",
        "--without-mingle",
    ],
    "beat": ["beat", "--loglevel=INFO"],
}


def start_celery(stack: Stack, role: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    extra = ["--schedule", str(tmp_path / "beat-schedule")] if role == "beat" else []
    return subprocess.run(
        [str(BIN / "celery"), "-A", "tasks", *CELERY[role], *extra],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("role", ["worker", "beat"])
def test_a_module_that_fails_to_import_stops_the_process(
    stack_factory: Callable[..., Stack], tmp_path: Path, role: str
) -> None:
    (tmp_path / "brokenapp.py").write_text("import os\n\nundefined_name\n")
    stack = stack_factory(
        FLOWBRIDGE_APP="tests.apps.e2e_nodes,brokenapp",
        PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}",
    )
    out = start_celery(stack, role, tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    logs = out.stdout + out.stderr
    assert f"cannot start the {role}" in logs
    assert "cannot import FLOWBRIDGE_APP module 'brokenapp': NameError" in logs
    assert f"{tmp_path / 'brokenapp.py'}, line 3" in logs
    assert "ready." not in logs


def test_a_worker_with_an_invalid_blueprint_names_the_file_and_exits(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    bad = tmp_path / "bps" / "typo.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"id": "typo", "nodes": [{"id": "a", "usse": "echo"}]}))
    stack = stack_factory(FLOWBRIDGE_BLUEPRINTS=str(bad.parent))
    out = start_celery(stack, "worker", tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    logs = out.stdout + out.stderr
    assert f"{bad}: blueprint 'typo' is invalid" in logs
    assert (
        "node 'a': 'uses' must be a non-empty string, got None (is 'usse' a typo of 'uses'?)"
        in logs
    )


def test_blueprints_from_several_directories(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    for d, bid in ((first, "from-one"), (second, "from-two")):
        d.mkdir()
        (d / f"{bid}.json").write_text(
            json.dumps({"id": bid, "nodes": [{"id": "a", "uses": "echo"}]})
        )
    stack = stack_factory(FLOWBRIDGE_BLUEPRINTS=f"{first}{os.pathsep}{second}")
    stack.start_bridge()
    stack.start_worker()
    for bid in ("from-one", "from-two"):
        assert stack.client.start(bid, {}).result(timeout=30)["status"] == "completed"


def test_the_bridge_picks_up_a_blueprint_file_added_while_it_runs(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    blueprints = tmp_path / "bps"
    blueprints.mkdir()
    stack = stack_factory(
        FLOWBRIDGE_BLUEPRINTS=str(blueprints), FLOWBRIDGE_BLUEPRINTS_RELOAD_S="0.2"
    )
    stack.start_bridge()
    stack.start_worker()
    (blueprints / "late.json").write_text(
        json.dumps({"id": "late", "nodes": [{"id": "a", "uses": "echo"}]})
    )
    log = tmp_path / "bridge.log"
    stack.wait_for(lambda: b"blueprint late@1 added" in log.read_bytes(), what="the reload")
    assert stack.client.start("late", {}).result(timeout=30)["status"] == "completed"

    (blueprints / "late.json").write_text(json.dumps({"id": "late", "nodes": [{"id": "a"}]}))
    stack.wait_for(lambda: b"invalid blueprint (keeping" in log.read_bytes(), what="the report")
    assert stack.client.start("late", {}).result(timeout=30)["status"] == "completed"
    assert stack.procs["bridge"].poll() is None
