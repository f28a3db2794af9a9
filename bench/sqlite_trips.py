"""What the SQLite store does per run and per hop: write transactions, statements, reads, hints.

The SQLite side of ``bench.round_trips``: one run of a blueprint through
``flowbridge.testing.Runner`` (the production engine, one task at a time in
this process) on a SQLite file, counted per task from the connection's trace
callback: each ``BEGIN IMMEDIATE`` is a write transaction (an fsync-bounded
commit under WAL with ``synchronous=NORMAL``: the cost that matters), each
statement outside one is a read. The port's outbox hints (a Redis ``LPUSH`` in
production) and dispatches (a Celery publish) are counted beside them, and the
outbox rows written (each one Kafka record the relay sends).
"""

from __future__ import annotations

import functools
import sqlite3
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from state.protocol import StateStore
    from state.sqlite import SQLiteStore

__all__ = ["SqlCount", "count_run", "markdown", "table"]


@dataclass
class SqlCount:
    """What one task (or the run's start) did on the store and the port."""

    label: str = ""
    transactions: int = 0
    statements: int = 0
    reads: int = 0
    outbox_rows: int = 0
    hints: int = 0
    dispatches: int = 0

    def row(self) -> dict[str, float]:
        """The counts by column name."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self) if f.name != "label"}


@contextmanager
def _counting(conn: sqlite3.Connection, count: SqlCount) -> Iterator[None]:
    inside = False  # in a write transaction; a plain BEGIN is a read snapshot

    def trace(sql: str) -> None:
        nonlocal inside
        head = sql.lstrip()[:16].upper()
        if head.startswith("BEGIN IMMEDIATE"):
            inside = True
            count.transactions += 1
        elif head.startswith(("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA")):
            inside = False
        elif inside:
            count.statements += 1
            if "INTO OUTBOX" in sql.upper():
                count.outbox_rows += 1
        else:
            count.reads += 1

    conn.set_trace_callback(trace)
    try:
        yield
    finally:
        conn.set_trace_callback(None)


def count_run(store: SQLiteStore, blueprint: str) -> tuple[str, list[SqlCount]]:
    """Run ``blueprint`` once on ``store`` in this process; its status and each task's counts."""
    from flowbridge.testing import Runner
    from tasks.inprocess import run_queued

    runner = Runner(store=cast("StateStore", store))
    port = runner.port
    current = SqlCount()

    def counted(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            setattr(current, name, getattr(current, name) + 1)
            return fn(*args, **kwargs)

        return call

    # The relay is the bridge's work: a hint is counted, not followed.
    port.notify_outbox = counted("hints", lambda: None)  # type: ignore[method-assign]
    port.dispatch = counted("dispatches", port.dispatch)  # type: ignore[method-assign]
    port.dispatch_chord = counted("dispatches", port.dispatch_chord)  # type: ignore[method-assign]
    port.dispatch_activity = counted("dispatches", port.dispatch_activity)  # type: ignore[method-assign]
    port.dispatch_activation = counted("dispatches", port.dispatch_activation)  # type: ignore[method-assign]
    conn = store._conn()
    tasks: list[SqlCount] = []

    def measure(label: str, fn: Callable[[], Any]) -> Any:
        nonlocal current
        current = SqlCount(label)
        with _counting(conn, current):
            out = fn()
        tasks.append(current)
        return out

    run_id = measure("start", lambda: runner.start(blueprint, {}, drain=False))
    while (item := port.pop_due(advance=True)) is not None:
        if item.task is not None:
            label = item.task.node_id
        elif item.body is not None:
            label = f"body:{item.body[1]}"
        elif item.activity is not None:
            label = f"activity:{item.activity.seq}"
        elif item.activation is not None:
            label = "activation"
        else:
            label = "other"
        measure(label, functools.partial(run_queued, port, item, runner.rt))
    run = store.get_run(run_id, snapshot=False)
    return ("missing" if run is None else run.status), tasks


def table(path: Path) -> dict[str, dict[str, float]]:
    """The rows of docs/performance.md's SQLite table: a one-node run, a chain and a fan-out."""
    import bench.apps
    import bench.joins  # registers the fan-out blueprints
    from state.sqlite import SQLiteStore

    rows: dict[str, dict[str, float]] = {}

    def run(bid: str, name: str) -> list[SqlCount]:
        store = SQLiteStore(path.with_name(f"{name}.db"))
        store.migrate()
        try:
            status, tasks = count_run(store, bid)
        finally:
            store.close()
        if status != "completed":
            raise RuntimeError(f"{bid} ended {status}")
        return tasks

    def median(tasks: Sequence[SqlCount]) -> dict[str, float]:
        return {k: statistics.median(t.row()[k] for t in tasks) for k in SqlCount().row()}

    def total(tasks: Sequence[SqlCount]) -> dict[str, float]:
        return {k: sum(t.row()[k] for t in tasks) for k in SqlCount().row()}

    one = run("bench.one", "one")
    rows["one-node run, whole (start + node + finish)"] = total(one)
    chain = run(CHAIN, "chain")
    last = f"n{bench.apps.STEPS - 1:03d}"
    rows["run start (create_run)"] = chain[0].row()
    rows["first node (claim moves the run to running)"] = chain[1].row()
    rows["plain hop (claim → run → complete → successor)"] = median(
        [t for t in chain[2:] if t.label != last]
    )
    rows["last node of a chain + the run finishing"] = next(
        t.row() for t in chain if t.label == last
    )
    fan = run(FAN, "fan")
    by = {t.label: t for t in fan}
    rows["fan-out source (10 successors)"] = by["src"].row()
    rows["fan-out branch (chord header)"] = median(
        [t for t in fan if t.label[:1] == "b" and t.label[1:].isdigit()]
    )
    rows["join firing (chord body)"] = by["body:join"].row()
    rows["join node + the run finishing"] = by["join"].row()
    wf = run(WORKFLOW, "wf")
    steps = [t for t in wf if t.label.startswith("activity:")]
    rows["code workflow step (activity + its activation)"] = median(steps[:-1])
    rows["code workflow's last step + the run finishing"] = steps[-1].row()
    return rows


#: The chain and fan-out of ``bench.round_trips`` (the Scylla table), counted the same way.
CHAIN = "bench.chain10"
FAN = "bench.fan10"
#: Ten sequential activities (``bench.apps.wf10``).
WORKFLOW = "bench.wf10"

_HEADS = (
    "write transactions",
    "statements in them",
    "reads",
    "outbox rows (Kafka records)",
    "outbox hints (Redis)",
    "dispatches (Celery)",
)


def markdown(rows: dict[str, dict[str, float]]) -> str:
    """``table`` as a Markdown table."""
    lines = ["| step | " + " | ".join(_HEADS) + " |", "|---" * (len(_HEADS) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:g}" for v in row.values()) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.sqlite_trips``: print the SQLite table on fresh files."""
    import tempfile

    del argv
    with tempfile.TemporaryDirectory() as tmp:
        print(markdown(table(Path(tmp) / "x.db")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
