"""Shared fixtures: real services on free ports, and per-test isolation.

A fixture whose service binary is missing skips the test locally and fails it
under ``CI=true``, so CI can never go green by skipping everything.

Services, each started once per session: tansu (the fast Kafka-protocol
broker every end-to-end test uses by default) and redis-server; a real Apache
Cassandra 4.0 (``cql_hosts``: ``SCYLLA_HOSTS`` when set, else the one in
``../shared/cassandra``) and a real Apache Kafka 4.0 broker (``real_kafka``,
from ``../shared/kafka``), both only when a test asks for them. A test runs on
Cassandra or real Kafka through the indirect parameters ``state_backend`` and
``broker`` (``on_both_stores``, ``on_both_brokers``).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from flowbridge.dev import (
    Service,
    ServiceUnavailable,
    redis_server_binary,
    start_redis,
    start_tansu,
    tansu_binary,
)
from flowbridge.jvm import JvmService, start_cassandra, start_kafka

if TYPE_CHECKING:
    import redis
    from celery import Celery

    from bridge.client import Client
    from state.protocol import StateStore
    from tasks.settings import Settings

# --- services ---

#: Databases of the session Redis: each test that asks for ``isolation`` gets one of its own.
REDIS_DATABASES = 64
_redis_dbs = itertools.cycle(range(1, REDIS_DATABASES))


def require_binary(find: Callable[[], str]) -> str:
    """Return a service binary, or skip (locally) / fail (under ``CI=true``) the test."""
    try:
        return find()
    except ServiceUnavailable as exc:
        missing_service(str(exc))
        raise


def missing_service(reason: str) -> None:
    """Skip the test locally; fail it under ``CI=true``, where every service must be there."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing service fails the run)", pytrace=False)
    pytest.skip(reason)


def _jvm_service(start: Callable[[], JvmService]) -> Iterator[JvmService]:
    try:
        service = start()
    except ServiceUnavailable as exc:
        missing_service(str(exc))
        raise
    try:
        yield service
    finally:
        if os.environ.get("FLOWBRIDGE_TEST_KEEP_SERVICES", "") != "1":
            service.stop()


@pytest.fixture(scope="session")
def services_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory for the session services' logs (its path is in every start error)."""
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def kafka(services_log_dir: Path) -> Iterator[Service]:
    """A tansu broker (in-memory) for the session; ``kafka.url`` is the bootstrap address."""
    require_binary(tansu_binary)
    with start_tansu(log_dir=services_log_dir) as service:
        yield service


@pytest.fixture(scope="session")
def redis_service(services_log_dir: Path) -> Iterator[Service]:
    """A redis-server for the session; tests that restart Redis should start their own."""
    require_binary(redis_server_binary)
    with start_redis(log_dir=services_log_dir, databases=REDIS_DATABASES) as service:
        yield service


@pytest.fixture(scope="session")
def cql_hosts() -> Iterator[str]:
    """``host:port[,...]`` of a real CQL server: ``SCYLLA_HOSTS``, else Cassandra from ../shared.

    The Cassandra is started once per session (10-60 s on a first boot) and
    stopped at the end unless it was already running or
    ``FLOWBRIDGE_TEST_KEEP_SERVICES=1`` (then the next session reuses it).
    """
    hosts = os.environ.get("SCYLLA_HOSTS", "").strip()
    if hosts:
        yield hosts
        return
    for service in _jvm_service(start_cassandra):
        yield service.url


@pytest.fixture(scope="session")
def real_kafka() -> Iterator[JvmService]:
    """A real Apache Kafka 4.0 broker (KRaft, from ../shared/kafka) for the session.

    Under ``pytest -n`` the broker the controlling process started (``_SHARED_KAFKA``).
    """
    shared = os.environ.get(_SHARED_KAFKA, "").strip()
    if shared:
        yield JvmService(name="kafka", url=shared, script=Path(), work_dir=Path(), owned=False)
        return
    yield from _jvm_service(start_kafka)


#: Under ``pytest -n``: the bootstrap address of the real Kafka the controlling process started.
_SHARED_KAFKA = "FLOWBRIDGE_TEST_KAFKA_URL"


def _parallel_controller(config: pytest.Config) -> bool:
    """Whether this is the controlling process of ``pytest -n N`` (N > 0), not a worker."""
    if hasattr(config, "workerinput"):
        return False
    return bool(getattr(config.option, "numprocesses", None))


def pytest_configure(config: pytest.Config) -> None:
    """Under ``pytest -n``: start the JVM services once, here, for every worker to share.

    Workers inherit the environment: ``SCYLLA_HOSTS`` and ``FLOWBRIDGE_TEST_KAFKA_URL``
    point them at the two servers (a session fixture in each would start its own, or stop
    a shared one while others still use it). A distribution that is missing is left to the
    workers' fixtures, which skip (or fail under ``CI=true``) with the reason.
    """
    if not _parallel_controller(config):
        return
    started: list[JvmService] = []
    config.stash[_STARTED] = started
    for var, start in (("SCYLLA_HOSTS", start_cassandra), (_SHARED_KAFKA, start_kafka)):
        if os.environ.get(var, "").strip():
            continue
        try:
            service = start()
        except ServiceUnavailable:
            continue
        started.append(service)
        os.environ[var] = service.url


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop what ``pytest_configure`` started (unless ``FLOWBRIDGE_TEST_KEEP_SERVICES=1``)."""
    if os.environ.get("FLOWBRIDGE_TEST_KEEP_SERVICES", "") == "1":
        return
    for service in config.stash.get(_STARTED, []):
        service.stop()


_STARTED = pytest.StashKey[list[JvmService]]()


@pytest.fixture
def state_backend(request: pytest.FixtureRequest) -> str:
    """Where the test's state lives: ``sqlite`` (default) or ``cassandra`` (indirect param)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> str:
    """Which Kafka the test's stack uses: ``tansu`` (default) or ``kafka`` (indirect param)."""
    return str(getattr(request, "param", "tansu"))


#: Run a test on SQLite and on the real Cassandra (``state_backend`` is indirect).
on_both_stores = pytest.mark.parametrize("state_backend", ["sqlite", "cassandra"], indirect=True)
#: Run a test on tansu and on the real Apache Kafka broker (``broker`` is indirect).
on_both_brokers = pytest.mark.parametrize("broker", ["tansu", "kafka"], indirect=True)


@dataclass(frozen=True)
class KafkaEndpoint:
    """The broker a test's stack talks to."""

    #: ``tansu`` or ``kafka``.
    kind: str
    #: The bootstrap address.
    url: str


@pytest.fixture
def kafka_endpoint(broker: str, request: pytest.FixtureRequest) -> KafkaEndpoint:
    """The session broker this test asked for (``broker``)."""
    if broker == "kafka":
        return KafkaEndpoint("kafka", request.getfixturevalue("real_kafka").url)
    return KafkaEndpoint("tansu", request.getfixturevalue("kafka").url)


def fresh_keyspace(hosts: str, tag: str) -> tuple[str, Callable[[], None]]:
    """Create and migrate keyspace ``flowbridge_<tag>`` on ``hosts``; returns its URL and a drop."""
    from state.scylla import ScyllaStore, parse_scylla_url

    url = f"scylla://{hosts}/flowbridge_{tag}"
    if os.environ.get("SCYLLA_DC"):
        url += f"?dc={os.environ['SCYLLA_DC']}"
    admin = ScyllaStore(parse_scylla_url(url, env=os.environ))
    keyspace = admin.config.keyspace

    def drop() -> None:
        try:
            admin._c().ddl(f"DROP KEYSPACE IF EXISTS {keyspace}")
        finally:
            admin.close()

    try:
        admin.migrate()
    except BaseException:
        drop()
        raise
    return url, drop


@dataclass(frozen=True)
class Isolation:
    """Names that keep one test's Kafka, Redis and state apart from every other test's."""

    #: ``t<8 hex>.``: prefix for topics (FLOWBRIDGE_TOPIC_PREFIX) and consumer groups.
    prefix: str
    #: ``redis://127.0.0.1:PORT/<db>`` on the session Redis: a database of its own, empty at start.
    redis_db_url: str
    #: ``t<8 hex>:``: kombu ``global_keyprefix`` and the prefix for our own keys and channels
    #: (pub/sub channels are shared by all databases, so the database alone is not enough).
    redis_prefix: str
    #: ``sqlite:////abs/path/state.db`` in the test's tmp_path, or a fresh Cassandra keyspace.
    state_url: str
    #: The test's own directory (logs of processes it starts, blueprint files).
    tmp_path: Path


@pytest.fixture
def isolation(
    redis_service: Service, tmp_path: Path, state_backend: str, request: pytest.FixtureRequest
) -> Iterator[Isolation]:
    """Unique per-test names; its Redis database is flushed before the test.

    With ``state_backend`` ``cassandra`` the state lives in a keyspace of its
    own (created and migrated here, dropped after the test).
    """
    import redis  # the client library: only tests import it, never flowbridge.dev

    tag = uuid.uuid4().hex[:8]
    db = next(_redis_dbs)
    url = f"redis://127.0.0.1:{redis_service.port}/{db}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    drop: Callable[[], None] | None = None
    if state_backend == "cassandra":
        state_url, drop = fresh_keyspace(request.getfixturevalue("cql_hosts"), f"e2e_{tag}")
    try:
        yield Isolation(
            prefix=f"t{tag}.",
            redis_db_url=url,
            redis_prefix=f"t{tag}:",
            state_url=state_url,
            tmp_path=tmp_path,
        )
    finally:
        if drop is not None:
            drop()


# --- flowbridge processes ---

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
E2E_APP = "tests.apps.e2e_nodes,tests.apps.e2e_workflows"


@dataclass
class Stack:
    """A bridge and a Celery worker for one test, on the session's Kafka and Redis."""

    env: dict[str, str]
    iso: Isolation
    procs: dict[str, subprocess.Popen[bytes]]

    @property
    def settings(self) -> Settings:
        from tasks.settings import Settings

        return Settings.from_env(self.env)

    @cached_property
    def client(self) -> Client:
        from bridge.client import Client
        from bridge.settings import KafkaSettings

        return Client(settings=self.settings, kafka=KafkaSettings.from_env(self.env))

    @property
    def store(self) -> StateStore:
        return self.client.store

    @cached_property
    def celery(self) -> Celery:
        """A Celery client app configured like the stack's processes (to send tasks directly)."""
        from celery import Celery

        from tasks.worker.config import celery_config

        app = Celery("flowbridge-test-client", set_as_current=False)
        app.conf.update(celery_config(self.settings))
        return app

    def send_task(self, name: str, run_id: str, *args: object, **kwargs: object) -> None:
        """Send a flowbridge task for ``run_id`` to its shard queue, as a worker would."""
        from tasks.worker.config import shard_queue

        self.celery.send_task(
            name,
            args=args,
            kwargs={"run_id": run_id, **kwargs},
            queue=shard_queue(run_id, self.settings.shards),
        )

    @cached_property
    def redis(self) -> redis.Redis:
        import redis

        return redis.Redis.from_url(self.env["REDIS_URL"])

    def effects(self, name: str) -> int:
        """How often test node ``name`` had its side effect (see tests/apps/e2e_nodes.py)."""
        raw = self.redis.get(f"{self.iso.redis_prefix}effects:{name}")
        return int(raw or 0)

    def produce(
        self,
        value: bytes | dict[str, object],
        *,
        key: str | None = None,
        topic: str = "jobs",
        full_topic: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Publish a raw record to one of the test's topics (or to ``full_topic`` as named)."""
        from kafka import KafkaProducer

        data = value if isinstance(value, bytes) else json.dumps(value).encode()
        producer = self.__dict__.get("_producer")
        if producer is None:
            producer = KafkaProducer(
                bootstrap_servers=self.env["KAFKA_BOOTSTRAP_SERVERS"],
                acks="all",
                max_request_size=8 << 20,
            )
            self.__dict__["_producer"] = producer
        producer.send(
            full_topic or self.settings.topic(topic),
            key=None if key is None else key.encode(),
            value=data,
            headers=headers or [],
        ).get(timeout=30)

    def read_topic(
        self,
        name: str,
        count: int,
        timeout: float = 30.0,
        *,
        full_topic: str | None = None,
        where: Callable[[Any], bool] | None = None,
    ) -> list[Any]:
        """Read ``count`` records of one of the test's topics from the beginning (no group).

        ``full_topic`` names a topic as it is (a workflow's own, shared by tests);
        ``where`` keeps only the records it accepts (this test's keys).
        """
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=self.env["KAFKA_BOOTSTRAP_SERVERS"],
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=16 << 20,
        )
        topic = full_topic or self.settings.topic(name)
        try:
            deadline = time.monotonic() + timeout
            parts: set[int] | None = None
            while not parts and time.monotonic() < deadline:
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    time.sleep(0.2)
            assert parts, f"topic {topic} never appeared"
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            records: list[Any] = []
            while len(records) < count and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=200).values():
                    records.extend(r for r in batch if where is None or where(r))
            return records
        finally:
            consumer.close()

    def wait_for(
        self, predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition"
    ) -> None:
        """Poll ``predicate`` until it is true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")

    def node_status(self, run_id: str, node_id: str) -> str | None:
        rec = self.store.get_node(run_id, node_id)
        return None if rec is None else rec.status

    def logs(self, lines: int = 40) -> str:
        out = []
        for name in self.procs:
            path = self.iso.tmp_path / f"{name}.log"
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {name}.log (last {lines} lines) ---\n" + "\n".join(tail))
        return "\n".join(out)

    def start(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = open(self.iso.tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            argv, env={**self.env, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs[name] = proc
        return proc

    def start_worker(
        self, name: str = "worker", concurrency: int = 2, *, events: bool = False, **env: str
    ) -> subprocess.Popen[bytes]:
        """Start a worker (``env`` overrides the stack's environment for it alone).

        ``events``: send Celery task events (``-E``), as Flower needs. A name used before
        starts that worker again (its log says ``ready.`` once more).
        """
        log = self.iso.tmp_path / f"{name}.log"
        seen = log.read_bytes().count(b"ready.") if log.exists() else 0
        proc = self.start(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "tasks",
                "worker",
                "--loglevel=INFO",
                f"--concurrency={concurrency}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"{name}-{self.iso.prefix}@%h",
                *(["-E"] if events else []),
            ],
            **env,
        )
        self.wait_for(
            lambda: log.exists() and log.read_bytes().count(b"ready.") > seen,
            timeout=30,
            what=f"{name} ready",
        )
        return proc

    def start_beat(self, name: str = "beat", **env: str) -> subprocess.Popen[bytes]:
        """Start Celery beat (the reconciler's and the dispatch check's schedules)."""
        proc = self.start(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "tasks",
                "beat",
                "--loglevel=INFO",
                "--schedule",
                str(self.iso.tmp_path / f"{name}-schedule"),
            ],
            **env,
        )
        log = self.iso.tmp_path / f"{name}.log"
        self.wait_for(
            lambda: log.exists() and b"beat: Starting" in log.read_bytes(),
            timeout=30,
            what=f"{name} started",
        )
        return proc

    def start_bridge(self, name: str = "bridge", **env: str) -> subprocess.Popen[bytes]:
        """Start a bridge and wait until it has created its topics and subscribed.

        Records produced before that would auto-create the topics with the
        broker's defaults (a real Kafka's partitions and size limits).
        """
        log = self.iso.tmp_path / f"{name}.log"
        seen = log.read_bytes().count(b"bridge consuming") if log.exists() else 0
        proc = self.start(name, [str(BIN / "python"), "-m", "bridge"], **env)
        self.wait_for(
            lambda: (
                proc.poll() is not None
                or (log.exists() and log.read_bytes().count(b"bridge consuming") > seen)
            ),
            timeout=60,
            what=f"{name} subscribed",
        )
        return proc

    def start_web(self, name: str = "web", *, port: int | None = None, **env: str) -> str:
        """Start the web process on ``port`` (a free one); returns its base URL once it answers."""
        import urllib.request

        from flowbridge.dev import free_port

        port = port or free_port()
        proc = self.start(name, [str(BIN / "python"), "-m", "bridge.web"], PORT=str(port), **env)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"web exited with {proc.returncode}\n{self.logs()}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        self.wait_for(up, timeout=30, what="web up")
        return url

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def close(self) -> None:
        # Signal every process first, then wait: their drains overlap instead of adding up.
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in list(self.procs):
            self.stop(name)
        producer = self.__dict__.get("_producer")
        if producer is not None:
            producer.close(timeout=5)
        if "client" in self.__dict__:
            self.client.close()
        if "redis" in self.__dict__:
            self.redis.close()


def reconcile(stack: Stack, **env: str) -> dict[str, int]:
    """One ``flowbridge reconcile --once`` pass in the stack's environment (plus ``env``)."""
    out = subprocess.run(
        [str(BIN / "flowbridge"), "reconcile", "--once"],
        env={**stack.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report: dict[str, int] = json.loads(out.stdout)
    return report


def stack_env(kafka: KafkaEndpoint | Service, iso: Isolation, **extra: str) -> dict[str, str]:
    """The environment of every flowbridge process of one test."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLOWBRIDGE_", "KAFKA_", "SCYLLA_"))
    }
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka.url,
        REDIS_URL=iso.redis_db_url,
        FLOWBRIDGE_REDIS_PREFIX=iso.redis_prefix,
        FLOWBRIDGE_TOPIC_PREFIX=iso.prefix,
        FLOWBRIDGE_STATE_URL=iso.state_url,
        FLOWBRIDGE_APP=E2E_APP,
        # tansu accepts short sessions: the bridge's group forms in ~1 s instead of ~3 s.
        # A real broker refuses sessions under its group.min.session.timeout.ms (6 s).
        FLOWBRIDGE_SESSION_TIMEOUT_MS=(
            "6000" if getattr(kafka, "kind", "tansu") == "kafka" else "2000"
        ),
        FLOWBRIDGE_TOPIC_PARTITIONS="2",
        FLOWBRIDGE_SHARDS="4",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@pytest.fixture
def stack_factory(
    kafka_endpoint: KafkaEndpoint, isolation: Isolation
) -> Iterator[Callable[..., Stack]]:
    """Build a ``Stack`` with extra environment; the caller starts what it needs."""
    stacks: list[Stack] = []

    def make(**extra: str) -> Stack:
        s = Stack(env=stack_env(kafka_endpoint, isolation, **extra), iso=isolation, procs={})
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        print(s.logs())
        s.close()


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    """A running bridge and worker for this test."""
    s = stack_factory()
    s.start_bridge()
    s.start_worker()
    return s
