"""An idempotent sink outside Redis, for the tests that wipe Redis (chaos, scale-out).

A ``ledger`` node applies its effect to a SQLite file (``FLOWBRIDGE_TEST_LEDGER``) once per
``ctx.idempotency_key`` (``INSERT OR IGNORE``), and counts every execution of its code in the
same transaction: a process killed mid-node leaves either both or neither. The effects in
tests/apps/e2e_nodes.py live in Redis, which these tests restart empty.

``ledger-fan``: ``start`` -> ``LEDGER_FAN`` parallel ``item<i>`` -> ``join`` (all) -> ``end``,
every node a ledger node (``LEDGER_NODES`` per run).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from flowbridge import NodeContext, node, register_blueprint

#: Env var naming the ledger's SQLite file (every worker process of a test shares it).
LEDGER_ENV = "FLOWBRIDGE_TEST_LEDGER"
#: Parallel items of ``ledger-fan``.
LEDGER_FAN = 4
#: Nodes of one ``ledger-fan`` run: start, the items, join, end.
LEDGER_NODES = LEDGER_FAN + 3

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, run_id TEXT NOT NULL, at REAL)",
    "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, run_id TEXT NOT NULL, n INTEGER)",
)


def _connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    # Autocommit mode: the transaction is ours (BEGIN IMMEDIATE takes the write lock up front).
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=60000")
    for ddl in _SCHEMA:
        conn.execute(ddl)
    return conn


@cache
def _ledger() -> sqlite3.Connection:
    return _connect(os.environ[LEDGER_ENV])


@node("ledger")
def ledger(ctx: NodeContext) -> dict[str, Any]:
    """Apply this node's effect once per idempotency key; count each execution of the code."""
    seconds = float(ctx.params.get("seconds", 0))
    if seconds:
        time.sleep(seconds)  # keeps tasks in flight for the kills
    conn = _ledger()
    key = ctx.idempotency_key
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT OR IGNORE INTO effects (key, run_id, at) VALUES (?, ?, ?)",
            (key, ctx.run_id, time.time()),
        )
        conn.execute(
            "INSERT INTO calls (key, run_id, n) VALUES (?, ?, 1)"
            " ON CONFLICT (key) DO UPDATE SET n = n + 1",
            (key, ctx.run_id),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return {"key": key}


@dataclass(frozen=True)
class LedgerCounts:
    """What the ledger holds for a set of runs."""

    #: Effects applied (one per idempotency key, however often the code ran).
    effects: int
    #: Executions of ledger node code.
    calls: int
    #: Keys whose code ran more than once, and how often.
    reruns: dict[str, int]
    #: Runs with an effect, and how many.
    per_run: dict[str, int]


def read_ledger(path: Path) -> LedgerCounts:
    """Read a test's ledger (from the test process)."""
    conn = _connect(path)
    try:
        effects = conn.execute("SELECT count(*) FROM effects").fetchone()[0]
        calls = conn.execute("SELECT coalesce(sum(n), 0) FROM calls").fetchone()[0]
        reruns = dict(conn.execute("SELECT key, n FROM calls WHERE n > 1").fetchall())
        per_run = dict(
            conn.execute("SELECT run_id, count(*) FROM effects GROUP BY run_id").fetchall()
        )
    finally:
        conn.close()
    return LedgerCounts(effects=int(effects), calls=int(calls), reruns=reruns, per_run=per_run)


def _ledger_fan(bid: str, items: int, seconds: float) -> None:
    params = {"seconds": seconds}
    nodes: list[dict[str, Any]] = [{"id": "start", "uses": "ledger", "params": params}]
    edges: list[dict[str, Any]] = []
    for i in range(items):
        nodes.append({"id": f"item{i}", "uses": "ledger", "params": params})
        edges += [
            {"source": "start", "target": f"item{i}"},
            {"source": f"item{i}", "target": "join"},
        ]
    nodes += [
        {"id": "join", "uses": "ledger", "params": params, "config": {"joinStrategy": "all"}},
        {"id": "end", "uses": "ledger", "params": params},
    ]
    edges.append({"source": "join", "target": "end"})
    register_blueprint({"id": bid, "nodes": nodes, "edges": edges})


_ledger_fan("ledger-fan", LEDGER_FAN, 0.02)
