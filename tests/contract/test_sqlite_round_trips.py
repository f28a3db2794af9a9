"""The write transactions of a run and a hop on a SQLite file (docs/performance.md, "Store trips").

The production engine runs each blueprint in this process (``flowbridge.testing.Runner``)
on a real SQLite file whose connection traces its statements; each task is counted on
its own (``bench.sqlite_trips``). A change that adds a write transaction, an outbox hint
or a dispatch to a step fails here: if it is worth it, change the budget and the table in
docs/performance.md together.
"""

from __future__ import annotations

from pathlib import Path

import bench.apps  # noqa: F401  (registers the bench blueprints and nodes)
from bench.sqlite_trips import table

#: (write transactions, outbox hints, dispatches) of each step.
BUDGET: dict[str, tuple[int, int, int]] = {
    # Issue 16 counted six for a one-node run (create, set running, claim, commit, finish,
    # the relay's delete); the claim takes the status along and the commit the run's end.
    "one-node run": (3, 2, 1),
    "run start": (1, 1, 1),
    "first node": (2, 0, 1),
    "plain hop": (2, 0, 1),
    "last node of a chain": (2, 1, 0),
    "fan-out branch": (2, 0, 0),
    "join firing": (1, 0, 1),
    # The activation's commit and its dispatched mark (the lock is unfenced; a worker that
    # runs the next activity itself commits the mark with the activation: one).
    "code workflow step": (2, 0, 1),
}


def test_each_step_costs_its_budget_of_write_transactions(tmp_path: Path) -> None:
    rows = table(tmp_path / "x.db")
    for step, (txns, hints, dispatches) in BUDGET.items():
        got = next(row for name, row in rows.items() if name.startswith(step))
        assert (got["transactions"], got["hints"], got["dispatches"]) == (
            txns,
            hints,
            dispatches,
        ), (step, got)
    # Every outbox row of the one-node run is one of its two lifecycle records.
    assert rows["one-node run, whole (start + node + finish)"]["outbox_rows"] == 2
