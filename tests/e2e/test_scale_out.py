"""Scale-out on the real Apache Kafka 4.0: three bridges in one consumer group, three workers.

Runs of ``ledger-fan`` flow while one bridge is stopped (SIGTERM), one started and one
kill -9'd: every run completes, every node's effect is applied once (the ledger), and at the
end the group has committed every partition to its end (lag 0, none left unconsumed).
``make scale`` runs 2,000 runs (FLOWBRIDGE_SCALE_RUNS) and measures the throughput with 1, 2
and 3 bridges and workers (FLOWBRIDGE_SCALE_THROUGHPUT=1); ``make test`` the short form.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.apps.ledger import LEDGER_NODES, read_ledger
from tests.conftest import Isolation, Stack
from tests.e2e import fleet

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("broker", ["kafka"], indirect=True)]

RUNS = fleet.env_int("FLOWBRIDGE_SCALE_RUNS", 150)
RATE = float(os.environ.get("FLOWBRIDGE_SCALE_RATE", "8"))
WAIT_S = max(90, RUNS // 4)
#: Partitions of the jobs topic and Celery shard queues: two per bridge of the three.
PARTITIONS = 6
#: When, as a share of the runs started, a bridge stops, one starts, one is killed.
EVENTS = [(0.3, "stop b1"), (0.5, "start b4"), (0.7, "kill b2")]


def _fleet_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return fleet.ledger_env(
        tmp_path,
        FLOWBRIDGE_TOPIC_PARTITIONS=str(PARTITIONS),
        FLOWBRIDGE_SHARDS=str(PARTITIONS),
        FLOWBRIDGE_OUTBOX_LEASE_S="3",
        **extra,
    )


def group_lag(stack: Stack, topics: list[str]) -> dict[tuple[str, int], tuple[int, int | None]]:
    """Per partition of ``topics`` with records: (end offset, the group's committed offset)."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    bootstrap = stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    group = stack.settings.topic_prefix + "flowbridge.bridge"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        committed = admin.list_group_offsets({group: None})[group]
        tps = [
            TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))
        ]
        ends = consumer.end_offsets(tps)
    finally:
        consumer.close()
        admin.close()
    return {
        (tp.topic, tp.partition): (
            ends[tp],
            committed[tp].offset if tp in committed else None,
        )
        for tp in tps
        if ends[tp] > 0
    }


def _behind(
    lag: dict[tuple[str, int], tuple[int, int | None]],
) -> dict[str, tuple[int, int | None]]:
    return {f"{t}[{p}]": v for (t, p), v in lag.items() if v[1] != v[0]}


@pytest.mark.timeout(300 + int(RUNS / RATE) + WAIT_S)
def test_three_bridges_in_a_group_lose_and_repeat_nothing_through_a_stop_a_start_and_a_kill(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    s = stack_factory(**_fleet_env(tmp_path))
    for name in ("b1", "b2", "b3"):
        s.start_bridge(name)
    for name in ("w1", "w2", "w3"):
        s.start_worker(name, concurrency=1)
    submitter = fleet.Submitter(s, "scale", RUNS, RATE)
    began = time.monotonic()
    submitter.start()
    for share, what in EVENTS:
        while submitter.fraction < share and not submitter.done.is_set():
            time.sleep(0.05)
        verb, name = what.split()
        if verb == "stop":
            assert s.stop(name) == 0, "SIGTERM drains, commits and exits cleanly"
        elif verb == "start":
            s.start_bridge(name)
        else:
            s.stop(name, signal.SIGKILL)
    submitter.join(RUNS / RATE + 60)
    assert submitter.error is None, submitter.error
    status = fleet.wait_finished(s, submitter.ids, timeout=WAIT_S)
    elapsed = time.monotonic() - began
    result = fleet.outcome(s, submitter.ids, status, tmp_path / "ledger.db")
    result.extra = {"s": f"{elapsed:.0f}", "runs/s": f"{RUNS / elapsed:.1f}"}
    fleet.print_table(f"scale-out on Kafka 4.0 ({fleet.load_averages()})", [("3 bridges", result)])

    assert not result.lost, f"{len(result.lost)} not completed, e.g. {result.lost[:5]}"
    assert not result.double, f"applied twice: {result.double[:5]}"
    counts = read_ledger(tmp_path / "ledger.db")
    assert counts.effects == RUNS * LEDGER_NODES
    topics = [s.settings.topic("jobs"), s.settings.topic("events")]
    deadline = time.monotonic() + 30
    lag = group_lag(s, topics)
    while _behind(lag) and time.monotonic() < deadline:
        time.sleep(1)
        lag = group_lag(s, topics)
    jobs = [p for (t, p) in lag if t == topics[0]]
    assert sorted(jobs) == list(range(PARTITIONS)), "records on every partition of the jobs topic"
    assert not _behind(lag), f"partitions not committed to their end: {_behind(lag)}"
    assert s.procs["b3"].poll() is None and s.procs["b4"].poll() is None
    print(f"re-executed node code: {result.reexec} of {counts.calls} calls")


#: Runs per point of the throughput measure (``make scale``).
BENCH_RUNS = fleet.env_int("FLOWBRIDGE_SCALE_BENCH_RUNS", 300)


@pytest.mark.skipif(
    os.environ.get("FLOWBRIDGE_SCALE_THROUGHPUT") != "1", reason="make scale measures throughput"
)
@pytest.mark.timeout(1800)
def test_throughput_with_one_two_and_three_bridges_and_workers(
    stack_factory: Callable[..., Stack], isolation: Isolation, tmp_path: Path
) -> None:
    rows = []
    iso = isolation
    for n in (1, 2, 3):
        # Topics, group and queues of their own per point.
        s = stack_factory(
            **_fleet_env(
                tmp_path,
                FLOWBRIDGE_TOPIC_PREFIX=f"{iso.prefix}n{n}.",
                FLOWBRIDGE_REDIS_PREFIX=f"{iso.redis_prefix}n{n}:",
            )
        )
        for i in range(n):
            s.start_bridge(f"n{n}-b{i}")
            s.start_worker(f"n{n}-w{i}", concurrency=1)
        before = read_ledger(tmp_path / "ledger.db")
        load_before = os.getloadavg()[0]
        submitter = fleet.Submitter(s, f"tp{n}", BENCH_RUNS, rate=1000.0)
        began = time.monotonic()
        submitter.start()
        submitter.join(120)
        assert submitter.error is None, submitter.error
        status = fleet.wait_finished(s, submitter.ids, timeout=600)
        elapsed = time.monotonic() - began
        result = fleet.outcome(s, submitter.ids, status, tmp_path / "ledger.db")
        assert not result.lost and not result.double
        result.reexec -= before.calls - before.effects
        result.extra = {
            "s": f"{elapsed:.1f}",
            "runs/s": f"{BENCH_RUNS / elapsed:.2f}",
            "node tasks/s": f"{BENCH_RUNS * LEDGER_NODES / elapsed:.1f}",
            "load 1-min before/after": f"{load_before:.2f}/{os.getloadavg()[0]:.2f}",
        }
        rows.append((f"{n} bridge(s) + {n} worker(s)", result))
        for name in list(s.procs):  # the next point has the machine to itself
            s.stop(name)
    fleet.print_table(f"throughput on Kafka 4.0, SQLite ({fleet.load_averages()})", rows)
