"""The two sides of a scenario: a flowbridge bridge and worker, and raw Celery (and its consumer).

Each side has its own Redis database and key prefix, and flowbridge its own
topic prefix and SQLite file. The probes that decide when work is complete
(a run's status, a task's result, a queue's length) read what each system
itself records, the same way on both sides.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from bench.harness import (
    BIN,
    PARTITIONS,
    READY_TIMEOUT_S,
    SESSION_TIMEOUT_MS,
    SHARDS,
    BenchError,
    BenchTimeout,
    Env,
    Proc,
    celery_worker_argv,
    wait_ready,
    wait_until,
)

if TYPE_CHECKING:
    import redis
    from celery import Celery
    from kafka import KafkaProducer

    from bench.profiling import Profiler

__all__ = ["BaselineSide", "FlowbridgeSide", "Side", "pausing"]


def pausing(sides: Mapping[str, Side]) -> Callable[[str], None]:
    """An ``alternate`` switch: resume the side about to run, pause the others."""

    def switch(name: str) -> None:
        for other, side in sides.items():
            if other != name:
                side.pause()
        sides[name].resume()

    return switch


class Side:
    """Things both sides have: an environment, a Redis database, a Kafka producer."""

    def __init__(self, env: Env, name: str) -> None:
        self.bench = env
        self.name = name
        self.tag = f"{name}-{uuid.uuid4().hex[:6]}"
        self.redis_url = env.redis_url()
        self.env = env.base_env()
        self.env["REDIS_URL"] = self.redis_url
        self._producer: KafkaProducer | None = None

    @cached_property
    def redis(self) -> redis.Redis[bytes]:
        import redis as redis_lib

        return redis_lib.Redis.from_url(self.redis_url)

    @property
    def producer(self) -> KafkaProducer:
        from kafka import KafkaProducer

        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bench.kafka.url.split(","), acks="all", linger_ms=0
            )
        return self._producer

    def send(self, topic: str, key: str, value: Mapping[str, Any]) -> Any:
        """Produce one JSON record; returns the future."""
        return self.producer.send(topic, key=key.encode(), value=json.dumps(value).encode())

    def create_topic(self, topic: str) -> None:
        """Create ``topic`` with the partitions the bridge would give it."""
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.bench.kafka.url.split(","))
        try:
            admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
        finally:
            admin.close()

    def start_worker(self, app: str, extra_env: Mapping[str, str] | None = None) -> Proc:
        ready = self.bench.workdir / f"{self.tag}-worker.ready"
        env = {**self.env, "BENCH_READY_FILE": str(ready), **(extra_env or {})}
        argv = celery_worker_argv(app, f"{self.tag}-worker", self.bench.concurrency)
        return self.bench.processes.start(f"{self.tag}-worker", argv, env, ready_file=ready)

    def latencies(self, count: int, timeout_s: float) -> list[float]:
        """Pop ``count`` latencies (seconds) recorded by ``bench.stamp``, waiting for each."""
        from bench.apps import LATENCY_KEY

        out = []
        for _ in range(count):
            item = self.redis.blpop([LATENCY_KEY], timeout=timeout_s)
            if item is None:
                raise BenchTimeout(f"{self.name}: no latency recorded within {timeout_s:g} s")
            out.append(float(item[1]))
        return out

    def pause(self) -> None:
        """Take this side's idle pollers off the CPU while the other side is measured."""

    def resume(self) -> None:
        """Undo ``pause`` and return once this side handles work again."""

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
        if "redis" in self.__dict__:
            self.redis.close()


class FlowbridgeSide(Side):
    """A flowbridge bridge and worker with their own topics, Redis prefix and SQLite file."""

    def __init__(
        self,
        env: Env,
        name: str,
        *,
        app_modules: str = "bench.apps",
        profiler: Profiler | None = None,
    ) -> None:
        super().__init__(env, name)
        #: Attached to the bridge whenever it starts (the ingest profile restarts it).
        self.profiler = profiler
        self.topic_prefix = f"{self.tag}."
        self.redis_prefix = f"{self.tag}:"
        self.state_path = env.workdir / f"{self.tag}.db"
        self.env.update(
            FLOWBRIDGE_REDIS_PREFIX=self.redis_prefix,
            FLOWBRIDGE_TOPIC_PREFIX=self.topic_prefix,
            FLOWBRIDGE_STATE_URL=f"sqlite:///{self.state_path}",
            FLOWBRIDGE_APP=app_modules,
            FLOWBRIDGE_SESSION_TIMEOUT_MS=str(SESSION_TIMEOUT_MS),
            FLOWBRIDGE_TOPIC_PARTITIONS=str(PARTITIONS),
            FLOWBRIDGE_SHARDS=str(SHARDS),
            # Stop in about a second: nothing is in flight when the benchmark stops a worker.
            FLOWBRIDGE_SOFT_SHUTDOWN_S="1",
        )
        self.bridge: Proc | None = None
        self.worker: Proc | None = None
        self._db: sqlite3.Connection | None = None
        self._paused = False

    def jobs_topic(self, prefix: str | None = None) -> str:
        return f"{self.topic_prefix if prefix is None else prefix}flowbridge.jobs"

    def start_bridge(self, *, topic_prefix: str | None = None) -> Proc:
        env = dict(self.env)
        if topic_prefix is not None:
            env["FLOWBRIDGE_TOPIC_PREFIX"] = topic_prefix
        self.bridge = self.bench.processes.start(
            f"{self.tag}-bridge", [str(BIN / "python"), "-m", "bridge"], env
        )
        if self.profiler is not None:
            # Attach once start-up (imports, topic creation) is over: profile the steady state.
            with contextlib.suppress(BenchTimeout):
                wait_until(
                    lambda: (
                        b"bridge consuming" in self.bridge.log_path.read_bytes()
                        if self.bridge and self.bridge.log_path.exists()
                        else False
                    ),
                    timeout_s=30,
                    interval_s=0.05,
                    what="the bridge to start consuming",
                )
            self.profiler.attach(self.bridge, "bridge")
        return self.bridge

    def stop(self) -> None:
        """Stop the bridge and the worker (the scope would, later)."""
        procs = [p for p in (self.bridge, self.worker) if p is not None]
        self.bench.processes.stop_many(procs)
        self.bridge = self.worker = None

    def stop_bridge(self) -> None:
        if self.bridge is not None:
            self.bench.processes.stop(self.bridge)
            self.bridge = None

    def start(self, *, bridge: bool = True, worker: bool = True) -> None:
        """Start the bridge and the worker together; return when the worker is ready."""
        if worker:
            self.worker = self.start_worker("tasks")
        if bridge:
            self.start_bridge()
        if self.worker is not None:
            wait_ready(self.worker)
        self.wait_for_schema()

    def wait_for_schema(self) -> None:
        """The bridge and worker create the SQLite schema on start; wait until it exists."""

        def has_runs() -> bool:
            try:
                return (
                    self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone()
                    is not None
                )
            except sqlite3.Error:
                return False

        wait_until(has_runs, timeout_s=READY_TIMEOUT_S, interval_s=0.05, what="the state schema")

    def pause(self) -> None:
        if self.bridge is not None and not self._paused:
            self.bridge.pause()
            self._paused = True

    def resume(self) -> None:
        if self.bridge is not None and self._paused:
            self.bridge.resume()
            self._paused = False
            # Its group session expired while it was stopped: wait until it consumes again.
            self.wait_run(self.start_run("bench.one"), timeout_s=60, interval_s=0.01)

    def check_alive(self) -> None:
        for proc in (self.bridge, self.worker):
            if proc is not None and not proc.alive():
                raise BenchError(f"{proc.name} exited; {proc.log_path}:\n{proc.log_tail()}")

    # --- submitting and probing -------------------------------------------
    def start_message(self, blueprint: str, run_id: str, run_input: Any = None) -> dict[str, Any]:
        return {
            "v": 1,
            "type": "start",
            "run_id": run_id,
            "blueprint": blueprint,
            "input": run_input or {},
        }

    def start_run(self, blueprint: str, run_input: Any = None) -> str:
        """Publish a start message (the real entry point) and return the run id."""
        run_id = f"{self.tag}-{uuid.uuid4().hex}"
        self.send(self.jobs_topic(), run_id, self.start_message(blueprint, run_id, run_input))
        return run_id

    @property
    def db(self) -> sqlite3.Connection:
        """A read-only connection to the state file: the benchmark's probe, never a writer.

        It reads the ``runs`` table directly rather than through ``StateStore.get_run``,
        which also decodes the blueprint snapshot: a probe should cost the system as
        little as possible.
        """
        if self._db is None:
            wait_until(self.state_path.exists, timeout_s=30, interval_s=0.05, what="state file")
            self._db = sqlite3.connect(
                f"file:{self.state_path}?mode=ro", uri=True, isolation_level=None
            )
        return self._db

    def run_status(self, run_id: str) -> str | None:
        try:
            row = self.db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        except sqlite3.OperationalError:  # "database is locked" while a checkpoint runs
            return None
        return None if row is None else str(row[0])

    def count_runs(self, status: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM runs", tuple[str, ...]()
        if status is not None:
            sql, args = sql + " WHERE status = ?", (status,)
        try:
            return int(self.db.execute(sql, args).fetchone()[0])
        except sqlite3.OperationalError:
            return -1

    def wait_run(self, run_id: str, *, timeout_s: float, interval_s: float) -> float:
        """Wait until the run is completed; fail if it failed. Returns ``perf_counter()``."""
        status: list[str | None] = [None]

        def finished() -> bool:
            status[0] = self.run_status(run_id)
            return status[0] in ("completed", "failed", "cancelled")

        try:
            t = wait_until(finished, timeout_s=timeout_s, interval_s=interval_s, what=run_id)
        except BenchTimeout as exc:
            self.check_alive()
            raise BenchTimeout(f"run {run_id} still {status[0]}: {exc}") from None
        if status[0] != "completed":
            raise BenchError(f"run {run_id} ended {status[0]}")
        return t

    def queue_keys(self) -> list[str]:
        return [f"{self.redis_prefix}flowbridge.shard.{n}" for n in range(SHARDS)]

    def queue_depth(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for key in self.queue_keys():
            pipe.llen(key)
        return sum(pipe.execute())

    def purge_queues(self) -> None:
        self.redis.delete(*self.queue_keys())

    def close(self) -> None:
        super().close()
        if self._db is not None:
            self._db.close()
            self._db = None


class BaselineSide(Side):
    """Raw Celery: a ``bench.apps:baseline`` worker and, for Kafka scenarios, the raw consumer."""

    def __init__(self, env: Env, name: str) -> None:
        super().__init__(env, name)
        self.redis_prefix = f"{self.tag}:"
        self.env["BENCH_REDIS_PREFIX"] = self.redis_prefix
        self.worker: Proc | None = None
        self.consumer: Proc | None = None
        self.consumer_topic = ""
        self._paused = False

    @cached_property
    def app(self) -> Celery:
        from bench.apps import make_baseline_app

        return make_baseline_app(self.env)

    def start(self) -> None:
        self.worker = self.start_worker("bench.apps:baseline")
        wait_ready(self.worker)

    def start_consumer(self, topic: str, group: str) -> Proc:
        ready = self.bench.workdir / f"{self.tag}-{group}.ready"
        argv = [
            str(BIN / "python"),
            "-m",
            "bench.rawconsumer",
            "--topic",
            topic,
            "--group",
            group,
            "--session-timeout-ms",
            str(SESSION_TIMEOUT_MS),
            "--ready-file",
            str(ready),
        ]
        self.consumer = self.bench.processes.start(
            f"{self.tag}-rawconsumer", argv, self.env, ready_file=ready
        )
        self.consumer_topic = topic
        return self.consumer

    def pause(self) -> None:
        if self.consumer is not None and not self._paused:
            self.consumer.pause()
            self._paused = True

    def resume(self) -> None:
        if self.consumer is not None and self._paused:
            self.consumer.resume()
            self._paused = False
            msg = {"task": "bench.stamp", "kwargs": {"sent_at": time.time()}}
            self.send(self.consumer_topic, uuid.uuid4().hex, msg)
            self.latencies(1, timeout_s=60)

    def stop_consumer(self) -> None:
        if self.consumer is not None:
            self.bench.processes.stop(self.consumer)
            self.consumer = None

    def check_alive(self) -> None:
        for proc in (self.worker, self.consumer):
            if proc is not None and not proc.alive():
                raise BenchError(f"{proc.name} exited; {proc.log_path}:\n{proc.log_tail()}")

    def result_keys(self, task_ids: Sequence[str]) -> list[str]:
        backend = self.app.backend
        return [backend.get_key_for_task(t).decode() for t in task_ids]

    def count_results(self, keys: Sequence[str]) -> int:
        return int(self.redis.exists(*keys))

    def wait_results(self, keys: Sequence[str], *, timeout_s: float, interval_s: float) -> float:
        try:
            return wait_until(
                lambda: self.count_results(keys) >= len(keys),
                timeout_s=timeout_s,
                interval_s=interval_s,
                what=f"{len(keys)} task result(s)",
            )
        except BenchTimeout:
            self.check_alive()
            raise

    def queue_depth(self) -> int:
        from bench.apps import BASELINE_QUEUE

        return int(self.redis.llen(self.redis_prefix + BASELINE_QUEUE))

    def purge_queues(self) -> None:
        from bench.apps import BASELINE_QUEUE

        self.redis.delete(self.redis_prefix + BASELINE_QUEUE)
