"""The CLI answers honestly where no broker is needed: help, listing, validate, migrate, pipes."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import RUN_STATUSES, build_parser
from flowbridge.dev import Service
from state.constants import RUN_ACTIVE, RUN_TERMINAL, SCHEMA_VERSION
from state.records import Run
from state.sqlite import SQLiteStore
from tests.conftest import BIN, ROOT

GOOD = {
    "id": "hello",
    "nodes": [{"id": "a", "uses": "echo"}, {"id": "b", "uses": "echo"}],
    "edges": [{"source": "a", "target": "b"}],
}


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWBRIDGE_", "KAFKA_"))}
    env.update(
        FLOWBRIDGE_STATE_URL=f"sqlite:///{tmp_path / 'state.db'}",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def flowbridge(
    env: dict[str, str], *args: str, python_flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN / "flowbridge"), *args]
    if python_flags:
        argv = [sys.executable, *python_flags, "-c", "from bridge.cli import main; main()", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_describes_every_argument_and_lists_exit_codes_and_statuses() -> None:
    parser = build_parser()
    for name, sub in subparsers(parser).items():
        for action in sub._actions:
            assert action.help, f"`flowbridge {name}`: {action.dest} has no help text"
    top = parser.format_help()
    for code in ("0", "1", "2", "3", "124", "141"):
        assert f"\n  {code} " in top, f"exit code {code} is listed"
    assert ", ".join(RUN_STATUSES) in top
    assert set(RUN_STATUSES) == RUN_ACTIVE | RUN_TERMINAL
    run_help = subparsers(parser)["run"].format_help()
    assert "how long --wait waits (default: 60.0)" in " ".join(run_help.split())
    assert "{pending,running,waiting,paused,completed,failed,cancelled}" in (
        subparsers(parser)["runs"].format_help()
    )


def test_help_imports_neither_kafka_nor_celery(tmp_path: Path) -> None:
    out = flowbridge(cli_env(tmp_path), "--help", python_flags=("-X", "importtime"))
    assert out.returncode == 0, out.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()}
    heavy = sorted(m for m in imported if m.split(".")[0] in ("kafka", "celery", "kombu"))
    assert heavy == [], "flowbridge --help must not import Kafka or Celery"


def test_runs_rejects_an_unknown_status_and_says_when_there_are_none(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    bogus = flowbridge(env, "runs", "--status", "bogus")
    assert bogus.returncode == 2
    assert "invalid choice: 'bogus'" in bogus.stderr
    _store_with_runs(tmp_path, 0)
    empty = flowbridge(env, "runs", "--status", "failed")
    assert empty.returncode == 0, empty.stderr
    assert (empty.stdout, "no runs with status 'failed'" in empty.stderr) == ("", True)


def _store_with_runs(tmp_path: Path, count: int) -> None:
    store = SQLiteStore(str(tmp_path / "state.db"))
    store.migrate()
    for i in range(count):
        run = Run(
            run_id=f"r{i}", blueprint_id="hello", version="1", status="completed", input={},
            snapshot={},
        )  # fmt: skip
        store.create_run(run, start_nodes=())
    store.close()


def test_runs_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    _store_with_runs(tmp_path, 50)
    proc = subprocess.Popen(
        [str(BIN / "flowbridge"), "runs", "--limit", "50"],
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line, as with `| head -0`
    stderr = proc.stderr.read().decode()
    assert proc.wait(60) == 141
    assert stderr == "", "no BrokenPipeError traceback"


def test_validate_checks_only_the_files_given_and_every_problem_of_each(tmp_path: Path) -> None:
    blueprints = tmp_path / "dir"
    blueprints.mkdir()
    (blueprints / "broken.json").write_text("{not json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD))
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "id": "bad",
                "nodes": [
                    {"id": "a", "uses": "echo", "config": {"maxRetry": 3}},
                    {"id": "b", "uses": "no-such-node"},
                ],
                "edges": [{"source": "a", "target": "b"}, {"source": "a", "target": "c"}],
            }
        )
    )
    env = cli_env(
        tmp_path, FLOWBRIDGE_APP="tests.apps.e2e_nodes", FLOWBRIDGE_BLUEPRINTS=str(blueprints)
    )

    ok = flowbridge(env, "validate", str(good), str(good))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout == f"{good}: ok (hello@1, 2 nodes)\n", "each path once; the directory unread"

    out = flowbridge(env, "validate", str(bad))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0] == f"{bad}: blueprint 'bad' is invalid:"
    assert out.stdout.count(str(bad)) == 1
    problems = "\n".join(lines[1:])
    assert "unknown config key 'maxRetry'" in problems, "a structural problem"
    assert "unknown uses 'no-such-node'" in problems, "an unregistered node"
    assert "target 'c' is not a node" in problems, "a graph problem"


def test_validate_names_a_module_that_fails_to_import(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD))
    out = flowbridge(cli_env(tmp_path, FLOWBRIDGE_APP="no_such_module_x"), "validate", str(good))
    assert out.returncode == 2
    assert "cannot import FLOWBRIDGE_APP module 'no_such_module_x'" in out.stderr
    assert "Traceback" not in out.stderr


def test_migrate_says_whether_it_created_upgraded_or_found_the_schema(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    first = flowbridge(env, "migrate")
    assert first.returncode == 0, first.stderr
    v = SCHEMA_VERSION
    assert f"schema created (version {v})" in first.stdout
    assert f"already at version {v}" in flowbridge(env, "migrate").stdout
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE schema_version SET version = 1")
    assert f"upgraded from version 1 to {v}" in flowbridge(env, "migrate").stdout
    # A version-3 file has no runs.attempt column: the upgrade adds it.
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("ALTER TABLE runs DROP COLUMN attempt")
        db.execute("UPDATE schema_version SET version = 3")
    assert f"upgraded from version 3 to {v}" in flowbridge(env, "migrate").stdout
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert "attempt" in {r[1] for r in db.execute("PRAGMA table_info(runs)")}
    # A version-4 file: its runs have no parent column and it has no batch pages yet.
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("ALTER TABLE runs DROP COLUMN parent")
        db.execute("DROP TABLE batch_pages")
        db.execute("UPDATE schema_version SET version = 4")
    assert f"upgraded from version 4 to {v}" in flowbridge(env, "migrate").stdout
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert "parent" in {r[1] for r in db.execute("PRAGMA table_info(runs)")}
        assert db.execute("SELECT COUNT(*) FROM batch_pages").fetchone() == (0,)


@pytest.mark.parametrize("once", [[], ["--once"]], ids=["plain", "once"])
def test_reconcile_runs_one_pass_with_or_without_once(
    tmp_path: Path, redis_service: Service, once: list[str]
) -> None:
    url = redis_service.url
    out = flowbridge(cli_env(tmp_path, REDIS_URL=url), "migrate")
    assert out.returncode == 0, out.stderr
    out = flowbridge(cli_env(tmp_path, REDIS_URL=url), "reconcile", *once)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["scanned"] == 0


CHANGED_CART = '''
from flowbridge import workflow

@workflow("kw-ecommerce", version=1)
async def cart(ctx, arg):
    """A release that dropped the inactivity timer: old histories no longer replay."""
    while True:
        await ctx.ref("main")
'''


def test_replay_checks_live_histories_against_the_code_to_deploy(tmp_path: Path) -> None:
    """`flowbridge replay RUN_ID` (and a saved file) exits 1 where new code would block the run."""
    import examples.kafka_workflow  # noqa: F401 - the cart workflow, in this process too
    from flowbridge.testing import Runner
    from state import open_store

    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_store(url)
    store.migrate()
    runner = Runner(store=store)
    runner.kafka_workflow("cart-1", 'new:{"abandonedCartTimeoutMS":50}', workflow="kw-ecommerce")
    runner.kafka_workflow("cart-1", '{"ref":"main","value":{"type":"updateEmail","email":"a@b"}}')
    store.close()

    env = cli_env(tmp_path, FLOWBRIDGE_APP="examples.kafka_workflow")
    saved = tmp_path / "cart-1.json"
    ok = flowbridge(env, "replay", "cart-1", "--save", str(saved))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok        cart-1 (kw-ecommerce v1, 2 activations)"), ok.stdout
    assert json.loads(saved.read_text())["format"] == "flowbridge.workflow-history/1"

    (tmp_path / "release2.py").write_text(CHANGED_CART)
    env2 = {**cli_env(tmp_path, FLOWBRIDGE_APP="release2"), "PYTHONPATH": f"{ROOT}:{tmp_path}"}
    diverged = flowbridge(env2, "replay", str(saved), "--json")
    assert diverged.returncode == 1
    (report,) = json.loads(diverged.stdout)
    assert report["ok"] is False and report["activation"] == 1
    assert "replaying activation 1" in report["error"], report["error"]

    unknown = flowbridge(env, "replay", "no-such-run")
    assert unknown.returncode == 1
    assert "no code workflow run 'no-such-run'" in unknown.stderr
    (tmp_path / "junk.json").write_text('{"a": 1}')
    junk = flowbridge(env, "replay", str(tmp_path / "junk.json"))
    assert junk.returncode == 1 and "not an exported workflow history" in junk.stderr
