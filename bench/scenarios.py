"""Scenarios 1-3 (flowbridge against raw Celery) and what every scenario shares.

Each scenario starts its own processes (a bridge and worker with their own
topic prefix, Redis database and key prefix, and SQLite file; a raw-Celery
worker with its own Redis database and prefix), warms both sides up, then runs
them alternately (A B A B ...). Completion is what each system records: a
flowbridge run's ``completed`` status in its store, a Celery task's result in
Redis; the benchmark polls both at the same interval. flowbridge runs are
started through Kafka, their real entry point, so their numbers include the
bridge; raw Celery's are sent to Redis directly.

Each scenario's ``profile`` runs one more flowbridge repetition, alone, with
py-spy attached to its bridge and worker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from celery import chain, chord

from bench.harness import (
    BenchError,
    BenchTimeout,
    Env,
    ScenarioSkipped,
    alternate,
    wait_until,
)
from bench.model import ScenarioResult, Sizes, Target
from bench.profiling import Profiler
from bench.sides import BaselineSide, FlowbridgeSide, pausing

__all__ = ["POLL_FAST_S", "Ctx", "FanOut", "IndependentRuns", "LinearChain", "Scenario"]

#: Poll interval for latency-bound completions (chains, fan-outs): ≤ 2 ms of quantisation.
POLL_FAST_S = 0.002
#: Poll interval for throughput runs that take a second or more.
POLL_SLOW_S = 0.01


@dataclass
class Ctx:
    """What a scenario gets: the services and process registry, the sizes, a logger."""

    env: Env
    sizes: Sizes
    log: Callable[[str], None]


class Scenario:
    """One scenario: ``run`` measures both sides; ``profile`` runs flowbridge once under py-spy."""

    key: ClassVar[str]
    number: ClassVar[str]
    title: ClassVar[str]

    def run(self, ctx: Ctx) -> list[ScenarioResult]:
        raise NotImplementedError

    def profile(self, ctx: Ctx, profiler: Profiler) -> str:
        """Run one profiled flowbridge repetition; return what was profiled, in words."""
        raise ScenarioSkipped(f"scenario {self.key} has no profile run")

    def failed(self, reason: str, *, skipped: bool = False) -> list[ScenarioResult]:
        return [
            ScenarioResult(
                id=self.number,
                title=self.title,
                metric="",
                unit="",
                better="lower",
                baseline_name="",
                target=None,
                status="skipped" if skipped else "failed",
                reason=reason,
            )
        ]


def _raw_noop(side: BaselineSide) -> Any:
    return side.app.signature("bench.noop", immutable=True)


# --- 1. linear chain -----------------------------------------------------------------


class LinearChain(Scenario):
    key = "chain"
    number = "1"
    title = "Linear 50 no-op nodes vs raw Celery chain of 50"

    length = 50
    target = Target("≤ 0.7x raw chain hop", "ratio_max", 0.7)

    def fb_once(self, fb: FlowbridgeSide, chains: int) -> float:
        t0 = time.perf_counter()
        t1 = t0
        for _ in range(chains):
            run_id = fb.start_run("bench.chain50")
            t1 = fb.wait_run(run_id, timeout_s=120, interval_s=POLL_FAST_S)
        return (t1 - t0) * 1000 / (self.length * chains)

    def raw_once(self, raw: BaselineSide, chains: int) -> float:
        t0 = time.perf_counter()
        t1 = t0
        for _ in range(chains):
            sig = chain(*[_raw_noop(raw) for _ in range(self.length)])
            res = sig.apply_async()
            t1 = raw.wait_results(raw.result_keys([res.id]), timeout_s=120, interval_s=POLL_FAST_S)
        return (t1 - t0) * 1000 / (self.length * chains)

    def run(self, ctx: Ctx) -> list[ScenarioResult]:
        n = ctx.sizes.chains_per_rep
        fb, raw = FlowbridgeSide(ctx.env, "s1-fb"), BaselineSide(ctx.env, "s1-raw")
        both = {"flowbridge": fb, "baseline": raw}
        try:
            fb.start()
            raw.start()
            sides = {
                "flowbridge": lambda _rep: self.fb_once(fb, n),
                "baseline": lambda _rep: self.raw_once(raw, n),
            }
            values = alternate(
                ctx.sizes.reps,
                sides,
                ctx.log,
                switch=pausing(both),
                warmup=1,
                target=self.target,
                max_reps=ctx.sizes.max_reps,
            )
        finally:
            fb.close()
            raw.close()
        return [
            ScenarioResult(
                id=self.number,
                title=self.title,
                metric="time per hop (start message → run completed, / 50)",
                unit="ms",
                better="lower",
                baseline_name="raw Celery chain (.si() x 50, results stored)",
                target=self.target,
                flowbridge=values["flowbridge"],
                baseline=values["baseline"],
                params={"length": self.length, "chains_per_rep": n},
            )
        ]

    def profile(self, ctx: Ctx, profiler: Profiler) -> str:
        fb = FlowbridgeSide(ctx.env, "p1-fb")
        try:
            fb.start()
            self.fb_once(fb, 1)
            profiler.attach_side(fb)
            self.fb_once(fb, 10)
        finally:
            fb.close()
        return "10 runs of the 50-node linear blueprint, one after another"


# --- 2. independent runs ---------------------------------------------------------------


class IndependentRuns(Scenario):
    key = "runs"
    number = "2"
    title = "Independent one-node runs vs raw apply_async no-ops"
    target = Target("≥ 0.8x raw throughput", "ratio_min", 0.8)

    def fb_once(self, fb: FlowbridgeSide, n: int) -> float:
        before = fb.count_runs("completed")
        topic = fb.jobs_topic()
        t0 = time.perf_counter()
        for _ in range(n):
            run_id = f"{fb.tag}-{uuid.uuid4().hex}"
            fb.send(topic, run_id, fb.start_message("bench.one", run_id))
        fb.producer.flush()
        try:
            t1 = wait_until(
                lambda: fb.count_runs("completed") >= before + n,
                timeout_s=max(120.0, n / 10),
                interval_s=POLL_SLOW_S,
                what=f"{n} runs to complete",
            )
        except BenchTimeout:
            fb.check_alive()
            raise
        if failed := fb.count_runs("failed"):
            raise BenchError(f"{failed} run(s) failed")
        return n / (t1 - t0)

    def raw_once(self, raw: BaselineSide, n: int) -> float:
        sig = _raw_noop(raw)
        t0 = time.perf_counter()
        ids = [sig.apply_async().id for _ in range(n)]
        t1 = raw.wait_results(
            raw.result_keys(ids), timeout_s=max(120.0, n / 10), interval_s=POLL_SLOW_S
        )
        return n / (t1 - t0)

    def run(self, ctx: Ctx) -> list[ScenarioResult]:
        n = ctx.sizes.independent_runs
        fb, raw = FlowbridgeSide(ctx.env, "s2-fb"), BaselineSide(ctx.env, "s2-raw")
        both = {"flowbridge": fb, "baseline": raw}
        try:
            fb.start()
            raw.start()
            values = alternate(
                ctx.sizes.reps,
                {
                    "flowbridge": lambda rep: self.fb_once(fb, n if rep >= 0 else 20),
                    "baseline": lambda rep: self.raw_once(raw, n if rep >= 0 else 20),
                },
                ctx.log,
                switch=pausing(both),
                warmup=1,
                target=self.target,
                max_reps=ctx.sizes.max_reps,
            )
        finally:
            fb.close()
            raw.close()
        return [
            ScenarioResult(
                id=self.number,
                title=self.title,
                metric=f"throughput ({n} submitted at once → all completed)",
                unit="runs/s",
                better="higher",
                baseline_name=f"raw Celery: {n} x apply_async(no-op), results stored",
                target=self.target,
                flowbridge=values["flowbridge"],
                baseline=values["baseline"],
                params={"runs": n},
            )
        ]

    def profile(self, ctx: Ctx, profiler: Profiler) -> str:
        n = ctx.sizes.independent_runs
        fb = FlowbridgeSide(ctx.env, "p2-fb")
        try:
            fb.start()
            self.fb_once(fb, 20)
            profiler.attach_side(fb)
            self.fb_once(fb, 2 * n)
        finally:
            fb.close()
        return f"{2 * n} one-node runs started at once through Kafka"


# --- 3. fan-out + join -------------------------------------------------------------------


class FanOut(Scenario):
    key = "fanout"
    number = "3"
    title = "Fan-out + join vs raw Celery chord"

    def joins_available(self, ctx: Ctx) -> FlowbridgeSide:
        """Start a flowbridge side with the join blueprints, or skip if joins do not work yet."""
        try:
            import bench.apps  # registers the nodes the join blueprints use
            import bench.joins
            from tasks.blueprint import check
            from tasks.registry import blueprints, nodes

            for width in (2, *ctx.sizes.fanout_widths):
                bid = bench.joins.DIAMOND if width == 2 else bench.joins.fan_out_id(width)
                check(blueprints.get(bid), known_uses=nodes.names())
        except Exception as exc:
            raise ScenarioSkipped(f"skipped: joins not available yet ({exc})") from None
        fb = FlowbridgeSide(ctx.env, "s3-fb", app_modules="bench.apps,bench.joins")
        try:
            fb.start()
            run_id = fb.start_run(bench.joins.DIAMOND)
            fb.wait_run(run_id, timeout_s=30, interval_s=0.05)
        except BenchError as exc:
            fb.close()
            raise ScenarioSkipped(
                f"skipped: joins not available yet (a diamond run did not complete: {exc})"
            ) from None
        return fb

    def fb_once(self, fb: FlowbridgeSide, width: int, timeout_s: float) -> float:
        from bench.joins import fan_out_id

        t0 = time.perf_counter()
        run_id = fb.start_run(fan_out_id(width))
        t1 = fb.wait_run(run_id, timeout_s=timeout_s, interval_s=POLL_FAST_S)
        return (t1 - t0) * 1000

    def raw_once(self, raw: BaselineSide, width: int, timeout_s: float) -> float:
        header = [_raw_noop(raw) for _ in range(width)]
        sig = chain(_raw_noop(raw), chord(header, raw.app.signature("bench.join")))
        t0 = time.perf_counter()
        res = sig.apply_async()
        t1 = raw.wait_results(
            raw.result_keys([res.id]), timeout_s=timeout_s, interval_s=POLL_FAST_S
        )
        return (t1 - t0) * 1000

    def run(self, ctx: Ctx) -> list[ScenarioResult]:
        fb = self.joins_available(ctx)
        raw = BaselineSide(ctx.env, "s3-raw")
        both = {"flowbridge": fb, "baseline": raw}
        results = []
        timeout_s = ctx.sizes.fanout_timeout_s
        try:
            raw.start()
            for i, width in enumerate(ctx.sizes.fanout_widths):
                sides = {
                    "flowbridge": lambda _rep, w=width: self.fb_once(fb, w, timeout_s),
                    "baseline": lambda _rep, w=width: self.raw_once(raw, w, timeout_s),
                }
                target = Target("≤ 1.3x raw chord", "ratio_max", 1.3) if width >= 1000 else None
                result = ScenarioResult(
                    id=f"{self.number}{'abcdef'[i]}",
                    title=f"Fan-out {width:,} + join vs raw chord of {width:,}",
                    metric="start → run completed",
                    unit="ms",
                    better="lower",
                    baseline_name=f"raw Celery: no-op | chord({width} no-ops, join)",
                    target=target,
                    params={"width": width, "timeout_s": timeout_s},
                )
                try:
                    # A first wide fan-out warms nothing the narrow one did not: skip it.
                    values = alternate(
                        ctx.sizes.reps,
                        sides,
                        ctx.log,
                        switch=pausing(both),
                        warmup=1 if width <= 200 else 0,
                        target=target,
                        max_reps=ctx.sizes.max_reps,
                    )
                    result.flowbridge, result.baseline = values["flowbridge"], values["baseline"]
                except BenchError as exc:
                    result.status, result.reason = "failed", str(exc)
                results.append(result)
        finally:
            fb.close()
            raw.close()
        return results

    def profile(self, ctx: Ctx, profiler: Profiler) -> str:
        width = max(ctx.sizes.fanout_widths)
        fb = self.joins_available(ctx)
        fb.stop()
        fb.close()
        fb = FlowbridgeSide(ctx.env, "p3-fb", app_modules="bench.apps,bench.joins")
        try:
            fb.start()
            self.fb_once(fb, 10, ctx.sizes.fanout_timeout_s)
            profiler.attach_side(fb)
            self.fb_once(fb, width, ctx.sizes.fanout_timeout_s)
        finally:
            fb.close()
        return f"one fan-out of {width:,} branches + join"
