"""What the Scylla store sends per node hop: LWTs, plain writes, reads and round trips, counted.

One run of a blueprint goes through ``flowbridge.testing.Runner`` (the
production engine, tasks one at a time in this process) over a Scylla store
whose connection counts what it sends (``Session.counting``). Each task is
counted on its own, so a plain hop is a middle node's task of a chain, a
fan-out branch is one branch's task, and a join firing is the chord body's.
The outbox relay is left out: in production it is the bridge's work, not the
hop's. ``tests/contract/test_scylla_round_trips.py`` holds the budget;
``bench.store_scenarios`` prints these beside the measured times.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from state.protocol import StateStore
    from state.scylla import ScyllaStore
    from state.scylla.driver import StatementCounts
    from tasks.blueprint import Blueprint

__all__ = ["KINDS", "RunCounts", "TaskCount", "count_run"]

#: The columns of a count, in the order docs/state.md's table shows them.
KINDS = ("lwts", "writes", "reads", "round_trips")


@dataclass(frozen=True)
class TaskCount:
    """What one task (or the run's start) sent."""

    #: ``start``, a node id, or ``body:<join>`` for a chord body.
    label: str
    lwts: int
    writes: int
    reads: int
    round_trips: int
    #: Statements by prepared-statement name.
    statements: dict[str, int] = field(default_factory=dict)

    def row(self) -> tuple[int, ...]:
        """The counts in ``KINDS`` order."""
        return (self.lwts, self.writes, self.reads, self.round_trips)


@dataclass(frozen=True)
class RunCounts:
    """Every task of one run, in the order they ran."""

    blueprint_id: str
    status: str
    tasks: list[TaskCount]

    def task(self, label: str) -> TaskCount:
        """The (first) task with ``label``."""
        return next(t for t in self.tasks if t.label == label)

    def median(self, labels: Sequence[str]) -> dict[str, float]:
        """The median of each count over the tasks with ``labels`` (the branches of a fan-out)."""
        rows = [t for t in self.tasks if t.label in set(labels)]
        return {k: statistics.median(getattr(t, k) for t in rows) for k in KINDS}

    def total(self) -> dict[str, int]:
        """The whole run's counts, start included."""
        return {k: sum(getattr(t, k) for t in self.tasks) for k in KINDS}

    def per_node(self, nodes: int) -> dict[str, float]:
        """The whole run's counts divided by its nodes: what a hop costs on average."""
        return {k: v / nodes for k, v in self.total().items()}


def count_run(store: ScyllaStore, blueprint: str | Blueprint) -> RunCounts:
    """Run ``blueprint`` once on ``store`` in this process, counting each task."""
    from flowbridge.testing import Runner
    from tasks.inprocess import run_queued

    runner = Runner(store=cast("StateStore", store))
    port = runner.port
    # The relay is the bridge's (a Redis hint in production), not part of a hop.
    port.notify_outbox = lambda: None  # type: ignore[method-assign]
    tasks: list[TaskCount] = []
    with store.session.counting() as c:
        run_id = runner.start(blueprint, {}, drain=False)
    tasks.append(_task("start", c))
    while (item := port.pop_due(advance=True)) is not None:
        if item.task is not None:
            label = item.task.node_id
        elif item.body is not None:
            label = f"body:{item.body[1]}"
        else:
            label = "other"
        with store.session.counting() as c:
            run_queued(port, item, runner.rt)
        tasks.append(_task(label, c))
    run = store.get_run(run_id, snapshot=False)
    bid = blueprint if isinstance(blueprint, str) else blueprint.id
    return RunCounts(bid, "missing" if run is None else run.status, tasks)


def _task(label: str, c: StatementCounts) -> TaskCount:
    return TaskCount(
        label,
        lwts=c.lwts,
        writes=c.writes,
        reads=c.reads,
        round_trips=c.round_trips,
        statements=dict(c.by_statement),
    )


#: The chain and fan-out ``budget`` runs (registered by ``bench.apps`` and ``bench.joins``).
CHAIN = "bench.chain10"
FAN = "bench.fan10"


def budget(store: ScyllaStore) -> dict[str, dict[str, float]]:
    """The rows of docs/state.md's round-trip table, from one chain and one fan-out run."""
    import bench.apps
    import bench.joins  # registers the fan-out blueprints

    chain = count_run(store, CHAIN)
    fan = count_run(store, FAN)
    for run in (chain, fan):
        if run.status != "completed":
            raise RuntimeError(f"{run.blueprint_id} ended {run.status}")
    last = f"n{bench.apps.STEPS - 1:03d}"
    middle = [f"n{i:03d}" for i in range(1, bench.apps.STEPS - 1)]
    branches = [t.label for t in fan.tasks if t.label[:1] == "b" and t.label[1:].isdigit()]

    def one(t: TaskCount) -> dict[str, float]:
        return dict(zip(KINDS, map(float, t.row()), strict=True))

    return {
        "run start (create_run)": one(chain.task("start")),
        "plain hop (claim → run → complete → successor)": chain.median(middle),
        "last node of a chain + the run finishing": one(chain.task(last)),
        f"fan-out source ({len(branches)} successors)": one(fan.task("src")),
        "fan-out branch (chord header)": fan.median(branches),
        "join firing (chord body)": one(fan.task("body:join")),
        "join node + the run finishing": one(fan.task("join")),
    }


def markdown(rows: dict[str, dict[str, float]]) -> str:
    """``budget`` as a Markdown table."""
    lines = [
        "| step | LWTs | plain writes | reads | round trips |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:g}" for k in KINDS) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.round_trips HOST:PORT``: print the table on a fresh keyspace."""
    import argparse
    import os
    import uuid

    from state.scylla import ScyllaStore, parse_scylla_url

    p = argparse.ArgumentParser(prog="python -m bench.round_trips", description=main.__doc__)
    p.add_argument("hosts", help="host:port[,...] of a CQL server")
    p.add_argument("--statements", action="store_true", help="also list statements per task")
    args = p.parse_args(argv)
    url = f"scylla://{args.hosts}/flowbridge_rt_{uuid.uuid4().hex[:8]}"
    store = ScyllaStore(parse_scylla_url(url, env=os.environ))
    try:
        store.migrate()
        print(markdown(budget(store)))
        if args.statements:
            for bid in (CHAIN, FAN):
                for t in count_run(store, bid).tasks[:4]:
                    print(bid, t.label, t.row(), t.statements)
    finally:
        store._c().ddl(f"DROP KEYSPACE IF EXISTS {store.config.keyspace}")
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
