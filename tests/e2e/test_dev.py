"""`make dev` (scripts/dev.py): your own code on the dev stack, headless use, and a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import BIN, ROOT

pytestmark = pytest.mark.e2e

DEV = [sys.executable, str(ROOT / "scripts" / "dev.py")]

NODES = """
from flowbridge import node


@node("greet")
def greet(ctx):
    return {"greeting": f"hello {ctx.input['name']}"}


@node("shout")
def shout(ctx):
    return {"loud": ctx.outputs["greet"]["greeting"].upper()}
"""


def dev_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWBRIDGE_", "KAFKA_"))}
    env.pop("PYTHONPATH", None)
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def own_project(tmp_path: Path) -> Path:
    """A user's project: a node module under code/, blueprints in two directories."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "mynodes.py").write_text(NODES)
    for d, bid, nodes, edges in (
        ("bp1", "greet-only", [{"id": "greet", "uses": "greet"}], []),
        (
            "bp2",
            "greeting",
            [{"id": "greet", "uses": "greet"}, {"id": "shout", "uses": "shout"}],
            [{"source": "greet", "target": "shout"}],
        ),
    ):
        (tmp_path / d).mkdir()
        (tmp_path / d / f"{bid}.json").write_text(
            json.dumps({"id": bid, "nodes": nodes, "edges": edges})
        )
    return tmp_path


def test_help_prints_the_options() -> None:
    out = subprocess.run([*DEV, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "--keep" in out.stdout and "--run BLUEPRINT" in out.stdout


def test_own_code_from_the_users_settings_runs_and_a_headless_stack_says_it_stops(
    tmp_path: Path,
) -> None:
    project = own_project(tmp_path)
    out = subprocess.run(
        [*DEV, "--dir", str(project / "dev"), "--run", "greeting", "--input", '{"name": "ada"}'],
        # Relative paths, as a user types them, from the project directory.
        env=dev_env(
            FLOWBRIDGE_APP="mynodes",
            FLOWBRIDGE_BLUEPRINTS=f"bp1{os.pathsep}bp2",
            PYTHONPATH="code",
        ),
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=150,
    )
    procs_log = (project / "dev" / "procs.log").read_text()
    assert out.returncode == 0, out.stdout + out.stderr + procs_log
    assert "blueprints: greet-only@1, greeting@1" in out.stdout
    start = out.stdout.index("{")
    run, _ = json.JSONDecoder().raw_decode(out.stdout[start:])
    assert run["status"] == "completed"
    assert run["output"] == {"shout": {"loud": "HELLO ADA"}}
    assert "No terminal and no --keep: stopping the stack now" in out.stdout
    assert "SIGKILL" not in procs_log, "every process stopped within honcho's 5 s"

    env_file = project / "dev" / "env"
    found = subprocess.run(
        ["bash", "-c", f"source {env_file} && command -v flowbridge && echo $FLOWBRIDGE_APP"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert found.stdout.split() == [str(BIN / "flowbridge"), "mynodes"]


def test_sigterm_stops_everything_it_started(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*DEV, "--keep", "--dir", str(tmp_path / "dev")],
        env=dev_env(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if "The stack keeps running" in line or not line:
            break
    assert "order finished with exit code 0" in "".join(seen), "".join(seen)
    tree = psutil.Process(proc.pid).children(recursive=True)
    names = " ".join(" ".join(p.cmdline()) for p in tree)
    for expected in (
        "honcho",
        "python -m bridge",
        "celery -A tasks worker",
        "celery -A tasks beat",
    ):
        assert expected in names, names
    assert "tansu" in names and "redis-server" in names

    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert "stopped: bridge, worker, beat, kafka, redis" in rest
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == [], f"left running: {[' '.join(p.cmdline()) for p in alive]}"
    assert "SIGKILL" not in (tmp_path / "dev" / "procs.log").read_text()


def test_an_invalid_blueprint_stops_the_stack_with_the_file_and_the_problem(tmp_path: Path) -> None:
    project = own_project(tmp_path)
    (project / "bp2" / "greeting.json").write_text(
        json.dumps({"id": "greeting", "nodes": [{"id": "greet", "usse": "greet"}]})
    )
    out = subprocess.run(
        [*DEV, "--dir", str(project / "dev")],
        env=dev_env(FLOWBRIDGE_APP="mynodes", FLOWBRIDGE_BLUEPRINTS="bp1:bp2", PYTHONPATH="code"),
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "the stack stopped during start-up" in out.stderr
    assert f"{project / 'bp2' / 'greeting.json'}: blueprint 'greeting' is invalid:" in out.stderr
    assert "(is 'usse' a typo of 'uses'?)" in out.stderr
