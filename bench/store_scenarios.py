"""Scenario 7: the same blueprints on Cassandra and on SQLite, per hop, in one run.

Two flowbridge sides (bridge and worker each) run alternately, A B A B: one
with its state in a fresh keyspace of the Apache Cassandra 4.0 in
``../shared/cassandra`` (started here if it is not running, stopped after if
this run started it), one on a SQLite file. Each runs the 50-node linear
chain and the fan-out of 200 + join; a run's time is from its start message
to its ``completed`` status, divided by its nodes (the time per hop). The
ratio is Cassandra's over SQLite's; its spread is that of the per-repetition
ratios. Beside it, the round trips the Scylla store sends per node of the
same blueprint, counted in one in-process run (``bench.round_trips``).
"""

from __future__ import annotations

import os
import statistics
import uuid
from typing import TYPE_CHECKING, Any

from bench.harness import BenchError, Env, ScenarioSkipped, alternate
from bench.model import ScenarioResult
from bench.scenarios import POLL_FAST_S, Ctx, Scenario
from bench.sides import FlowbridgeSide, pausing

if TYPE_CHECKING:
    from state.scylla import ScyllaStore

__all__ = ["CassandraSide", "StoreRatio"]

#: The blueprints, with their node counts (``bench.apps``, ``bench.joins``).
BLUEPRINTS = (("bench.chain50", 50, "linear chain of 50"), ("bench.fan200", 202, "fan-out 200"))


class CassandraSide(FlowbridgeSide):
    """A flowbridge side whose state is a fresh keyspace on a real CQL server."""

    def __init__(self, env: Env, name: str, *, hosts: str, app_modules: str) -> None:
        super().__init__(env, name, app_modules=app_modules)
        from state.scylla import ScyllaStore, parse_scylla_url

        self.keyspace = f"flowbridge_bench_{uuid.uuid4().hex[:8]}"
        url = f"scylla://{hosts}/{self.keyspace}"
        self.env["FLOWBRIDGE_STATE_URL"] = url
        #: The probe (and the migrate): one single-partition read per poll.
        self.store: ScyllaStore = ScyllaStore(parse_scylla_url(url, env=os.environ))

    def start(self, *, bridge: bool = True, worker: bool = True) -> None:
        """Create the keyspace (``flowbridge migrate``: Scylla's release step), then start."""
        self.store.migrate()
        super().start(bridge=bridge, worker=worker)

    def wait_for_schema(self) -> None:
        """Migrated before the start."""

    def run_status(self, run_id: str) -> str | None:
        row = self.store.session.run_row(run_id)
        return None if row is None else str(row["status"])

    def count_runs(self, status: str | None = None) -> int:
        raise BenchError("count_runs is not available on the Cassandra side")

    def close(self) -> None:
        super().close()
        try:
            self.store._c().ddl(f"DROP KEYSPACE IF EXISTS {self.keyspace}")
        finally:
            self.store.close()


def _per_hop(side: FlowbridgeSide, blueprint: str, nodes: int, runs: int) -> float:
    """Milliseconds per node of ``runs`` runs of ``blueprint``, one after another."""
    import time

    t0 = time.perf_counter()
    t1 = t0
    for _ in range(runs):
        run_id = side.start_run(blueprint)
        t1 = side.wait_run(run_id, timeout_s=300, interval_s=POLL_FAST_S)
    return (t1 - t0) * 1000 / (nodes * runs)


def _ratio_spread(cass: list[float], sqlite: list[float]) -> tuple[float, float, float]:
    """Median, min and max of the per-repetition ratios (repetitions ran in pairs)."""
    ratios = [a / b for a, b in zip(cass, sqlite, strict=False) if b]
    return statistics.median(ratios), min(ratios), max(ratios)


class StoreRatio(Scenario):
    key = "store"
    number = "7"
    title = "Cassandra against SQLite, per hop"

    def run(self, ctx: Ctx) -> list[ScenarioResult]:
        from flowbridge.dev import ServiceUnavailable
        from flowbridge.jvm import start_cassandra

        try:
            service = start_cassandra()
        except ServiceUnavailable as exc:
            raise ScenarioSkipped(f"skipped: no Cassandra ({exc})") from None
        try:
            return self._run(ctx, service.url)
        finally:
            service.stop()

    def _run(self, ctx: Ctx, hosts: str) -> list[ScenarioResult]:
        apps = "bench.apps,bench.joins"
        cass = CassandraSide(ctx.env, "s7-cass", hosts=hosts, app_modules=apps)
        lite = FlowbridgeSide(ctx.env, "s7-lite", app_modules=apps)
        both = {"flowbridge": cass, "baseline": lite}
        runs = ctx.sizes.chains_per_rep
        results = []
        try:
            counted = self._count(cass.store)
            cass.start()
            lite.start()
            for i, (bp, nodes, name) in enumerate(BLUEPRINTS):
                reps = {
                    "flowbridge": lambda _rep, b=bp, n=nodes: _per_hop(cass, b, n, runs),
                    "baseline": lambda _rep, b=bp, n=nodes: _per_hop(lite, b, n, runs),
                }
                values = alternate(ctx.sizes.reps, reps, ctx.log, switch=pausing(both), warmup=1)
                result = ScenarioResult(
                    id=f"{self.number}{'ab'[i]}",
                    title=f"{name.capitalize()}: Cassandra 4.0 vs SQLite",
                    metric="time per node (start message → run completed, / nodes)",
                    unit="ms",
                    better="lower",
                    baseline_name=f"the same blueprint ({bp}) with its state on SQLite",
                    target=None,
                    flowbridge=values["flowbridge"],
                    baseline=values["baseline"],
                    params={"blueprint": bp, "nodes": nodes, "runs_per_rep": runs},
                )
                med, lo, hi = _ratio_spread(values["flowbridge"], values["baseline"])
                trips = counted[bp]
                result.extra.update(ratio_spread={"median": med, "min": lo, "max": hi})
                result.extra.update(round_trips_per_node=trips)
                result.notes.append(
                    f"Cassandra / SQLite per repetition: {med:.2f}x ({lo:.2f}-{hi:.2f}); "
                    f"the Scylla store sends per node {_fmt_counts(trips)} "
                    "(counted in one in-process run)."
                )
                ctx.log(f"  {result.id}: {result.notes[-1]}")
                results.append(result)
        finally:
            cass.close()
            lite.close()
        return results

    @staticmethod
    def _count(store: ScyllaStore) -> dict[str, dict[str, float]]:
        import bench.apps
        import bench.joins  # noqa: F401  (the counted runs' blueprints and nodes)
        from bench.round_trips import count_run

        store.migrate()
        out: dict[str, dict[str, float]] = {}
        for bp, nodes, _ in BLUEPRINTS:
            run = count_run(store, bp)
            if run.status != "completed":
                raise BenchError(f"the counted run of {bp} ended {run.status}")
            out[bp] = run.per_node(nodes)
        return out


def _fmt_counts(c: dict[str, Any]) -> str:
    return (
        f"{c['round_trips']:.1f} round trips ({c['lwts']:.1f} LWTs, {c['writes']:.1f} writes, "
        f"{c['reads']:.1f} reads)"
    )
