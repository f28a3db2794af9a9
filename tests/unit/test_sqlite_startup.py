"""Processes that start together (bridge, worker, beat, CLI) may all create the SQLite file at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from state.sqlite import SQLiteStore


def _open_and_migrate(path: str) -> str:
    store = SQLiteStore(path)
    store.migrate()
    return "ok" if store.get_run("nothing") is None else "unexpected"


def test_many_processes_create_the_same_fresh_store_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(6) as pool:
        for i in range(5):
            path = str(tmp_path / f"fresh-{i}.db")
            assert pool.map(_open_and_migrate, [path] * 6) == ["ok"] * 6
