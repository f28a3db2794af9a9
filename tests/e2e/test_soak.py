"""Soak (issue 16): many runs through one bridge and two workers, on tansu and SQLite.

Runs of ``soak`` (tests/apps/soak.py, three nodes in a line) are started as fast as the stack
finishes them, never more than ``WINDOW`` ahead of the completions (steady state, not a
backlog). Completions are read from the runs topic (``run.completed``), since retention deletes
finished runs from the store during the soak: ``FLOWBRIDGE_RETENTION_DAYS`` is set to
``RETENTION_S`` seconds and beat runs the reconciler, which purges, every ``RECONCILE_S``.

Measured: the resident memory of the bridge, of each worker's main and pool processes and of
beat after a warm-up and at the end; the SQLite file (with its WAL), the outbox and the rows
left once every run finished. Asserted: every run completes, the outbox drains, no finished run
is kept past retention (plus two reconciler intervals), and in the long form (``make soak``,
FLOWBRIDGE_SOAK_RUNS=100000) each process grows by at most ``RSS_GROWTH_MB``; on the short
form of ``make test`` memory is noise and only printed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import E2E_APP, Stack
from tests.e2e import fleet

pytestmark = pytest.mark.e2e

RUNS = fleet.env_int("FLOWBRIDGE_SOAK_RUNS", 600)
#: Runs before the first memory sample (imports, caches and pools filled).
WARMUP = min(1000, RUNS // 5)
#: Runs started and not yet completed, at most.
WINDOW = fleet.env_int("FLOWBRIDGE_SOAK_WINDOW", 1000)
#: Retention of finished runs, and beat's reconciler interval (the purge).
RETENTION_S = 10.0
RECONCILE_S = 3.0
#: Growth of a process's RSS from the warm-up to the end allowed in the long form.
RSS_GROWTH_MB = 20
#: The long form, where memory growth is asserted.
LONG = RUNS >= 10_000
#: Memory samples over the soak (after the warm-up, then at each tenth).
SAMPLES = 10
MB = 1 << 20
#: Seconds without a completion while runs are in flight that fail the soak (a stuck stack).
STALL_S = 120.0
#: tansu's in-memory storage spends time per record batch of a partition on each fetch: with
#: the bridge's default 10 ms fetch wait, a partition past ~10,000 batches (one per start) is
#: read at a few records per second. Eight partitions and 100 ms keep 100,000 starts readable.
TANSU_ENV = {"FLOWBRIDGE_TOPIC_PARTITIONS": "8", "FLOWBRIDGE_FETCH_MAX_WAIT_MS": "100"}


class Completions(threading.Thread):
    """Read the runs topic from its start: which runs completed, which failed."""

    def __init__(self, stack: Stack, tag: str) -> None:
        super().__init__(daemon=True, name="soak-completions")
        self.stack, self.tag = stack, tag
        self.completed: set[str] = set()
        self.failed: set[str] = set()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    @property
    def finished(self) -> int:
        return len(self.completed) + len(self.failed)

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        topic = self.stack.settings.topic("runs")
        consumer = KafkaConsumer(
            bootstrap_servers=self.stack.env["KAFKA_BOOTSTRAP_SERVERS"],
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        try:
            parts = None
            while not parts:
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    time.sleep(0.2)
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            while not self.stopping.is_set():
                for batch in consumer.poll(timeout_ms=200, max_records=5000).values():
                    for record in batch:
                        value = json.loads(record.value)
                        run_id = str(value.get("run_id", ""))
                        if not run_id.startswith(self.tag):
                            continue
                        if value.get("type") == "run.completed":
                            self.completed.add(run_id)
                        elif value.get("type") in ("run.failed", "run.cancelled"):
                            self.failed.add(run_id)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            consumer.close()


def processes(stack: Stack) -> dict[str, psutil.Process]:
    """The stack's processes by label: bridge, each worker's main and pool processes, beat."""
    found: dict[str, psutil.Process] = {}
    for name, proc in stack.procs.items():
        main = psutil.Process(proc.pid)
        found[name] = main
        for i, child in enumerate(sorted(main.children(), key=lambda c: c.pid), 1):
            found[f"{name} pool {i}"] = child
    return found


def rss_mb(procs: dict[str, psutil.Process]) -> dict[str, float]:
    """Each process's resident set size in MB (VmRSS)."""
    return {label: p.memory_info().rss / MB for label, p in procs.items()}


def store_figures(db: Path) -> dict[str, int]:
    """Row counts of the store, read-only: runs, nodes, history, outbox; finished runs overdue."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:

        def count(sql: str, *args: object) -> int:
            return int(conn.execute(sql, args).fetchone()[0])

        # Overdue: expired longer ago than two reconciler intervals and a margin.
        overdue_before = time.time() - 2 * RECONCILE_S - 5
        return {
            "runs": count("SELECT count(*) FROM runs"),
            "runs finished": count("SELECT count(*) FROM runs WHERE expires_at IS NOT NULL"),
            "runs overdue": count(
                "SELECT count(*) FROM runs WHERE expires_at IS NOT NULL AND expires_at < ?",
                overdue_before,
            ),
            "nodes": count("SELECT count(*) FROM nodes"),
            "history": count("SELECT count(*) FROM history"),
            "outbox": count("SELECT count(*) FROM outbox"),
        }
    finally:
        conn.close()


def file_sizes(db: Path) -> dict[str, int]:
    """Sizes in bytes of the SQLite file and its WAL (and shared-memory index)."""
    return {
        suffix or "db": (db.parent / (db.name + suffix)).stat().st_size
        for suffix in ("", "-wal", "-shm")
        if (db.parent / (db.name + suffix)).exists()
    }


@pytest.mark.timeout(600 + RUNS // 5)
def test_a_long_stream_of_runs_completes_with_flat_memory_and_a_store_retention_keeps_small(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    s = stack_factory(
        FLOWBRIDGE_APP=f"{E2E_APP},tests.apps.soak",
        FLOWBRIDGE_RETENTION_DAYS=repr(RETENTION_S / 86400),
        FLOWBRIDGE_RECONCILE_INTERVAL_S=str(RECONCILE_S),
        **TANSU_ENV,
    )
    s.start_bridge("bridge")
    s.start_worker("w1")
    s.start_worker("w2")
    s.start_beat("beat")
    db = Path(s.iso.state_url.removeprefix("sqlite:///"))
    tag = "soak-"
    done = Completions(s, tag)
    done.start()

    samples: list[tuple[int, dict[str, float]]] = []
    marks = {WARMUP + (RUNS - WARMUP) * k // SAMPLES for k in range(1, SAMPLES)}
    procs: dict[str, psutil.Process] = {}
    began = time.monotonic()
    warm_at = began
    seen, moved = 0, time.monotonic()
    for i in range(RUNS):
        while i - done.finished >= WINDOW:
            assert done.error is None, done.error
            if done.finished != seen:
                seen, moved = done.finished, time.monotonic()
            assert time.monotonic() - moved < STALL_S, f"no run finished for {STALL_S:.0f} s"
            time.sleep(0.005)
        if i == WARMUP:
            # Sampled once the warm-up's runs finished: the same point in every soak.
            while done.finished < WARMUP:
                time.sleep(0.01)
            procs = processes(s)
            samples.append((i, rss_mb(procs)))
            warm_at = time.monotonic()
        elif i in marks:
            samples.append((i, rss_mb(procs)))
            rate = (done.finished - WARMUP) / (time.monotonic() - warm_at)
            print(f"soak: {i} started, {done.finished} finished ({rate:.1f}/s)", flush=True)
        s.client.start("soak", {"i": i}, run_id=f"{tag}{i}")
    deadline = time.monotonic() + 120 + RUNS / 100
    while done.finished < RUNS and time.monotonic() < deadline:
        assert done.error is None, done.error
        time.sleep(0.1)
    elapsed = time.monotonic() - began
    steady = time.monotonic() - warm_at

    # The relay drains the outbox; then a purge past the last run's retention is due.
    end = time.monotonic() + 60
    while store_figures(db)["outbox"] and time.monotonic() < end:
        time.sleep(0.5)
    samples.append((RUNS, rss_mb(procs)))
    at_end = store_figures(db)
    sizes = file_sizes(db)
    end = time.monotonic() + RETENTION_S + 3 * RECONCILE_S + 15
    while store_figures(db)["runs"] and time.monotonic() < end:
        time.sleep(0.5)
    drained = store_figures(db)
    done.stopping.set()
    done.join(10)

    first, last = samples[0][1], samples[-1][1]
    growth = {label: last[label] - first[label] for label in first if label in last}
    print(f"\nsoak: {RUNS} runs of `soak` (3 nodes), 1 bridge, 2 workers ({fleet.load_averages()})")
    print("| runs | completed | failed | s | runs/s | runs/s after warm-up |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {RUNS} | {len(done.completed)} | {len(done.failed)} | {elapsed:.0f} "
        f"| {RUNS / elapsed:.1f} | {(RUNS - WARMUP) / steady:.1f} |"
    )
    print(f"\nRSS in MB after {WARMUP} runs, then every {(RUNS - WARMUP) // SAMPLES} runs")
    print("| process | pid | start | end | growth | max | samples |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, p in procs.items():
        series = [row[label] for _, row in samples if label in row]
        print(
            f"| {label} | {p.pid} | {first[label]:.1f} | {last[label]:.1f} "
            f"| {growth[label]:+.1f} | {max(series):.1f} | {' '.join(f'{v:.0f}' for v in series)} |"
        )
    print(f"\nstore at the end (the outbox drained; retention {RETENTION_S:.0f} s)")
    print("| file | bytes |")
    print("|---|---:|")
    for name, size in sizes.items():
        print(f"| {name} | {size:,} |")
    print("| rows | when the last run finished | one purge later |")
    print("|---|---:|---:|")
    for key in at_end:
        print(f"| {key} | {at_end[key]:,} | {drained[key]:,} |")

    missing = RUNS - len(done.completed)
    assert not done.failed, f"{len(done.failed)} failed, e.g. {sorted(done.failed)[:5]}"
    assert missing == 0, f"{missing} runs not completed\n{s.logs()}"
    assert at_end["outbox"] == 0, "the relay drains the outbox"
    assert at_end["runs overdue"] == 0, "finished runs kept past retention"
    assert drained["runs"] == 0, "retention deletes every finished run"
    pids = {label: p.pid for label, p in procs.items()}
    assert pids == {label: p.pid for label, p in processes(s).items()}, "a process was replaced"
    if LONG:
        grown = {label: f"{mb:+.1f} MB" for label, mb in growth.items() if mb > RSS_GROWTH_MB}
        assert not grown, f"RSS grew by more than {RSS_GROWTH_MB} MB: {grown}"
