"""Scenarios 4 and 5: the bridge against a raw kafka-python consumer loop.

Both consumers use the bridge's consumer settings; see ``bench/rawconsumer.py``
for the raw loop and ``bench/scenarios.py`` for what every scenario shares.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.harness import BenchError, Proc, alternate, idle_cpu_shares, wait_ready, wait_until
from bench.model import ScenarioResult, Target, percentile
from bench.profiling import Profiler
from bench.scenarios import Ctx, Scenario
from bench.sides import BaselineSide, FlowbridgeSide, pausing

__all__ = ["BridgeIngest", "StartLatency"]


# --- 4. bridge ingest ---------------------------------------------------------------------


def _drain_rate(depth: Callable[[], int], n: int, proc: Callable[[], Proc | None]) -> float:
    """Messages/s from the first task seen in Redis until all ``n`` are there."""
    first: list[tuple[float, int]] = []

    def seen_any() -> bool:
        d = depth()
        if d > 0:
            first.append((time.perf_counter(), d))
        p = proc()
        if p is not None and not p.alive():
            raise BenchError(f"{p.name} exited; {p.log_path}:\n{p.log_tail()}")
        return d > 0

    wait_until(seen_any, timeout_s=60, interval_s=0.005, what="the first dispatched task")
    t1, d1 = first[0]
    t2 = wait_until(
        lambda: depth() >= n, timeout_s=max(120.0, n / 50), interval_s=0.005, what=f"{n} tasks"
    )
    if d1 >= n or t2 <= t1:
        raise BenchError(f"all {n} tasks appeared in one poll: too few messages to measure")
    return (n - d1) / (t2 - t1)


class BridgeIngest(Scenario):
    key = "ingest"
    number = "4"
    title = "Bridge ingest: node jobs in Kafka → Celery tasks in Redis"
    target = Target("≥ 1.0x raw consumer loop", "ratio_min", 1.0)

    runs = 100

    def prefill(
        self, side: FlowbridgeSide | BaselineSide, topic: str, run_ids: list[str], n: int
    ) -> None:
        side.create_topic(topic)
        for i in range(n):
            run_id = run_ids[i % len(run_ids)]
            side.send(topic, run_id, {"v": 1, "type": "node", "run_id": run_id, "node": "only"})
        side.producer.flush()

    def setup_fb(self, fb: FlowbridgeSide) -> list[str]:
        """Runs that node jobs may name: created by the bridge, never executed (no worker)."""
        fb.start(worker=False)
        run_ids = [fb.start_run("bench.one") for _ in range(self.runs)]
        fb.producer.flush()
        wait_until(
            lambda: fb.queue_depth() >= self.runs,
            timeout_s=60,
            interval_s=0.05,
            what="the setup runs' start nodes",
        )
        fb.stop_bridge()
        fb.purge_queues()
        return run_ids

    def fb_once(self, fb: FlowbridgeSide, run_ids: list[str], n: int, rep: int | str) -> float:
        prefix = f"{fb.tag}-r{rep}."
        self.prefill(fb, fb.jobs_topic(prefix), run_ids, n)
        fb.purge_queues()
        fb.start_bridge(topic_prefix=prefix)
        try:
            return _drain_rate(fb.queue_depth, n, lambda: fb.bridge)
        finally:
            fb.stop_bridge()
            fb.purge_queues()

    def raw_once(self, raw: BaselineSide, run_ids: list[str], n: int, rep: int) -> float:
        topic = f"{raw.tag}-r{rep}.jobs"
        self.prefill(raw, topic, run_ids, n)
        raw.start_consumer(topic, f"{raw.tag}-r{rep}.group")
        try:
            return _drain_rate(raw.queue_depth, n, lambda: raw.consumer)
        finally:
            raw.stop_consumer()
            raw.purge_queues()

    def run(self, ctx: Ctx) -> list[ScenarioResult]:
        n = ctx.sizes.ingest_messages
        fb, raw = FlowbridgeSide(ctx.env, "s4-fb"), BaselineSide(ctx.env, "s4-raw")
        try:
            run_ids = self.setup_fb(fb)
            values = alternate(
                ctx.sizes.reps,
                {
                    "flowbridge": lambda rep: self.fb_once(fb, run_ids, n, rep),
                    "baseline": lambda rep: self.raw_once(raw, run_ids, n, rep),
                },
                ctx.log,
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
                metric=f"{n:,} node jobs prefilled; first → last task in Redis",
                unit="msg/s",
                better="higher",
                baseline_name="kafka-python consumer, same settings, send_task per record",
                target=self.target,
                flowbridge=values["flowbridge"],
                baseline=values["baseline"],
                params={
                    "messages": n,
                    "runs_named": self.runs,
                    "fetch_max_wait_ms": 10,
                    "max_poll_records": 500,
                    "partitions": 2,
                },
                notes=[
                    "No worker runs during this scenario: it measures the consumer alone. "
                    "The named runs are pending (never executed): node jobs for a finished "
                    "run are recorded in history and not dispatched (another path)."
                ],
            )
        ]

    def profile(self, ctx: Ctx, profiler: Profiler) -> str:
        n = ctx.sizes.ingest_messages
        fb = FlowbridgeSide(ctx.env, "p4-fb", profiler=profiler)
        try:
            run_ids = self.setup_fb(fb)
            self.fb_once(fb, run_ids, n, "profile")
        finally:
            fb.close()
        return f"the bridge consuming {n:,} prefilled node jobs"


# --- 5. start → first node latency ----------------------------------------------------------


class StartLatency(Scenario):
    key = "latency"
    number = "5"
    title = "Start message on Kafka → first node running"
    target = Target("≤ 1.15x raw consumer + task", "ratio_max", 1.15)

    def measure(
        self, side: FlowbridgeSide | BaselineSide, send: Callable[[float], None], count: int
    ) -> list[float]:
        out: list[float] = []
        for _ in range(count):
            # A random gap, so sends do not fall into step with the consumers' fetch cycle.
            time.sleep(random.uniform(0.0, 0.01))
            send(time.time())
            out.extend(v * 1000 for v in side.latencies(1, timeout_s=15))
        return out

    def idle_cost(
        self, ctx: Ctx, fb: FlowbridgeSide, raw: BaselineSide, seconds: float = 5.0
    ) -> dict[str, float | None]:
        """CPU the two consumers (and tansu answering them) use with no messages at all."""
        assert fb.bridge is not None and raw.consumer is not None
        assert ctx.env.kafka.proc is not None
        tansu = ctx.env.kafka.proc.pid
        raw.pause()
        fb_idle = idle_cpu_shares({"bridge": fb.bridge.pid, "tansu": tansu}, seconds)
        fb.pause()
        raw.resume()
        raw_idle = idle_cpu_shares({"consumer": raw.consumer.pid, "tansu": tansu}, seconds)
        fb.resume()
        return {
            "bridge": fb_idle["bridge"],
            "tansu_for_bridge": fb_idle["tansu"],
            "raw_consumer": raw_idle["consumer"],
            "tansu_for_raw_consumer": raw_idle["tansu"],
        }

    def run(self, ctx: Ctx) -> list[ScenarioResult]:
        per_rep = math.ceil(ctx.sizes.latency_runs / ctx.sizes.reps)
        fb, raw = FlowbridgeSide(ctx.env, "s5-fb"), BaselineSide(ctx.env, "s5-raw")
        both = {"flowbridge": fb, "baseline": raw}
        samples: dict[str, list[float]] = {"flowbridge": [], "baseline": []}
        try:
            fb.start()
            raw.start()
            raw_topic = f"{raw.tag}.jobs"
            raw.create_topic(raw_topic)
            wait_ready(raw.start_consumer(raw_topic, f"{raw.tag}.group"))

            def fb_send(t: float) -> None:
                run_id = f"{fb.tag}-{uuid.uuid4().hex}"
                msg = fb.start_message("bench.stamp", run_id, {"sent_at": t})
                fb.send(fb.jobs_topic(), run_id, msg).get(timeout=10)

            def raw_send(t: float) -> None:
                msg = {"task": "bench.stamp", "kwargs": {"sent_at": t}}
                raw.send(raw_topic, uuid.uuid4().hex, msg).get(timeout=10)

            def rep_fn(
                name: str, side: Any, send: Callable[[float], None]
            ) -> Callable[[int], float]:
                def once(rep: int) -> float:
                    values = self.measure(side, send, per_rep if rep >= 0 else 10)
                    if rep >= 0:
                        samples[name].extend(values)
                    return percentile(values, 50)

                return once

            sides = {
                "flowbridge": rep_fn("flowbridge", fb, fb_send),
                "baseline": rep_fn("baseline", raw, raw_send),
            }
            for warm in sides.values():  # both consumers joined and warm before measuring idle
                warm(-1)
            idle = self.idle_cost(ctx, fb, raw)
            values = alternate(
                ctx.sizes.reps,
                sides,
                ctx.log,
                switch=pausing(both),
                target=self.target,
                max_reps=ctx.sizes.max_reps,
            )
        finally:
            fb.close()
            raw.close()
        pooled = {
            name: {
                "p50": percentile(v, 50),
                "p90": percentile(v, 90),
                "p99": percentile(v, 99),
                "max": max(v),
                "n": len(v),
            }
            for name, v in samples.items()
        }
        return [
            ScenarioResult(
                id=self.number,
                title=self.title,
                metric="p50 per repetition (pooled p50/p99 in the notes)",
                unit="ms",
                better="lower",
                baseline_name="kafka-python consumer → send_task → raw Celery task",
                target=self.target,
                flowbridge=values["flowbridge"],
                baseline=values["baseline"],
                params={"runs_per_side": per_rep * ctx.sizes.reps, "fetch_max_wait_ms": 10},
                extra={"pooled": pooled, "idle_cpu_share_of_a_core": idle},
                notes=[_idle_note(idle)],
            )
        ]


def _pct(v: float | None) -> str:
    return "?" if v is None else f"{v * 100:.0f} %"


def _idle_note(idle: dict[str, float | None]) -> str:
    return (
        "With no messages at all, the bridge uses "
        f"{_pct(idle['bridge'])} of a core (and tansu {_pct(idle['tansu_for_bridge'])} answering "
        f"it); the raw consumer {_pct(idle['raw_consumer'])} (tansu "
        f"{_pct(idle['tansu_for_raw_consumer'])}). Both poll with fetch_max_wait_ms=10; the "
        "other side's consumer is paused (SIGSTOP) while one side is measured."
    )
