"""Kafka and bridge settings: typed, frozen, read once from the environment.

Heroku Kafka's ``KAFKA_URL`` (``kafka+ssl://host:port,...``), ``KAFKA_TRUSTED_CERT``,
``KAFKA_CLIENT_CERT`` and ``KAFKA_CLIENT_CERT_KEY`` (PEM text) are understood:
the PEMs are written to private temporary files that kafka-python reads.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bridge.kafka_logging import quiet_slow_task_warnings
from state.errors import ConfigError
from tasks.settings import env_float, env_int

__all__ = ["BridgeSettings", "KafkaSettings"]

_MIB = 1024 * 1024


def _bootstrap(env: Mapping[str, str]) -> tuple[str, bool]:
    """Bootstrap servers and whether the URL asked for SSL (``kafka+ssl://``)."""
    raw = env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if raw:
        return raw, False
    url = env.get("KAFKA_URL", "").strip()
    if not url:
        return "127.0.0.1:9092", False
    servers, ssl = [], False
    for raw_part in url.split(","):
        part = raw_part.strip()
        if "://" in part:
            u = urlsplit(part)
            ssl = ssl or u.scheme.endswith("+ssl") or u.scheme == "ssl"
            servers.append(u.netloc)
        else:
            servers.append(part)
    return ",".join(servers), ssl


def _pem_file(env: Mapping[str, str], name: str) -> str | None:
    pem = env.get(name, "").strip()
    if not pem:
        return None
    fd, path = tempfile.mkstemp(prefix=f"flowbridge-{name.lower()}-", suffix=".pem")
    with os.fdopen(fd, "w") as f:  # mkstemp makes it 0600: keys stay private
        f.write(pem + "\n")
    return path


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    """How to reach Kafka (shared by the bridge, the client and the CLI)."""

    #: KAFKA_BOOTSTRAP_SERVERS (or the hosts of KAFKA_URL).
    bootstrap_servers: str = "127.0.0.1:9092"
    #: KAFKA_SECURITY_PROTOCOL: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    security_protocol: str = "PLAINTEXT"
    #: KAFKA_SASL_MECHANISM: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (with a SASL protocol).
    sasl_mechanism: str | None = None
    #: KAFKA_SASL_USERNAME.
    sasl_username: str | None = None
    #: KAFKA_SASL_PASSWORD (never logged).
    sasl_password: str | None = field(default=None, repr=False)
    #: KAFKA_SSL_CAFILE, or the file written from KAFKA_TRUSTED_CERT.
    ssl_cafile: str | None = None
    #: KAFKA_SSL_CERTFILE, or the file written from KAFKA_CLIENT_CERT.
    ssl_certfile: str | None = None
    #: KAFKA_SSL_KEYFILE, or the file written from KAFKA_CLIENT_CERT_KEY.
    ssl_keyfile: str | None = field(default=None, repr=False)
    #: KAFKA_SSL_CHECK_HOSTNAME: on, except by default for Heroku Kafka (KAFKA_TRUSTED_CERT with a
    #: kafka+ssl:// KAFKA_URL), whose certificates do not name the brokers.
    ssl_check_hostname: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSettings:
        """Read the Kafka connection settings from ``env`` (default ``os.environ``)."""
        env = os.environ if env is None else env
        servers, url_ssl = _bootstrap(env)
        cafile = env.get("KAFKA_SSL_CAFILE") or _pem_file(env, "KAFKA_TRUSTED_CERT")
        certfile = env.get("KAFKA_SSL_CERTFILE") or _pem_file(env, "KAFKA_CLIENT_CERT")
        keyfile = env.get("KAFKA_SSL_KEYFILE") or _pem_file(env, "KAFKA_CLIENT_CERT_KEY")
        sasl = env.get("KAFKA_SASL_MECHANISM") or None
        default_proto = "PLAINTEXT"
        if url_ssl or cafile or certfile:
            default_proto = "SSL"
        if sasl:
            default_proto = "SASL_SSL" if default_proto == "SSL" else "SASL_PLAINTEXT"
        proto = (env.get("KAFKA_SECURITY_PROTOCOL") or default_proto).upper()
        if proto not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ConfigError(
                f"KAFKA_SECURITY_PROTOCOL={proto!r}: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            )
        if proto.startswith("SASL") and not sasl:
            raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={proto} needs KAFKA_SASL_MECHANISM")
        # Heroku Kafka (its PEMs and a kafka+ssl:// URL) serves certificates that do not name
        # the brokers, and Heroku says to turn hostname checks off: the default there.
        heroku = url_ssl and bool(env.get("KAFKA_TRUSTED_CERT", "").strip())
        raw_check = env.get("KAFKA_SSL_CHECK_HOSTNAME", "").strip().lower()
        check = raw_check not in ("0", "false", "no") if raw_check else not heroku
        return cls(
            bootstrap_servers=servers,
            security_protocol=proto,
            sasl_mechanism=sasl,
            sasl_username=env.get("KAFKA_SASL_USERNAME") or None,
            sasl_password=env.get("KAFKA_SASL_PASSWORD") or None,
            ssl_cafile=cafile,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            ssl_check_hostname=check,
        )

    def client_config(self) -> dict[str, Any]:
        """kafka-python keyword arguments common to producers, consumers and admins."""
        # Every Kafka client is configured here, so this is where its log noise is quieted.
        quiet_slow_task_warnings()
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            cfg.update(
                ssl_cafile=self.ssl_cafile,
                ssl_certfile=self.ssl_certfile,
                ssl_keyfile=self.ssl_keyfile,
                ssl_check_hostname=self.ssl_check_hostname,
            )
        if self.sasl_mechanism:
            cfg.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return cfg


@dataclass(frozen=True, kw_only=True)
class BridgeSettings:
    """The bridge process: consumer group, limits and latency tuning."""

    #: FLOWBRIDGE_GROUP_ID: consumer group (the topic prefix is prepended).
    group_id: str = "flowbridge.bridge"
    #: FLOWBRIDGE_MAX_MESSAGE_BYTES: larger job messages go to the DLQ.
    max_message_bytes: int = _MIB
    #: FLOWBRIDGE_DLQ_MAX_BYTES: the DLQ producer's limit; at least the jobs topic's maximum.
    dlq_max_bytes: int = 16 * _MIB
    #: FLOWBRIDGE_FETCH_MAX_WAIT_MS: latency ~ half of it on brokers that answer fetches late.
    fetch_max_wait_ms: int = 10
    #: FLOWBRIDGE_SESSION_TIMEOUT_MS: how fast a dead bridge's partitions move (and a group forms).
    session_timeout_ms: int = 6000
    #: FLOWBRIDGE_HEARTBEAT_MS.
    heartbeat_interval_ms: int = 1000
    #: FLOWBRIDGE_MAX_POLL_RECORDS: records handled per poll (and per commit).
    max_poll_records: int = 500
    #: FLOWBRIDGE_OUTBOX_SWEEP_S: the relay sweeps the outbox this often even without hints.
    outbox_sweep_s: float = 1.0
    #: FLOWBRIDGE_OUTBOX_LEASE_S: a relay's lease on an outbox shard; a dead bridge's shards
    #: are relayed by another after at most this long.
    outbox_lease_s: float = 10.0
    #: FLOWBRIDGE_SHUTDOWN_S: on SIGTERM, drain and commit within this many seconds.
    shutdown_s: float = 20.0
    #: FLOWBRIDGE_TOPIC_PARTITIONS: partitions of topics the bridge creates.
    topic_partitions: int = 6
    #: FLOWBRIDGE_TOPIC_REPLICATION: replication factor of topics the bridge creates.
    topic_replication: int = 1
    #: FLOWBRIDGE_BLUEPRINTS_RELOAD_S: how often FLOWBRIDGE_BLUEPRINTS is checked for changed
    #: files (0: never; a restart loads them).
    blueprints_reload_s: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BridgeSettings:
        """Read the bridge settings from ``env`` (default ``os.environ``)."""
        env = os.environ if env is None else env
        max_bytes = env_int(env, "FLOWBRIDGE_MAX_MESSAGE_BYTES", _MIB, minimum=1024)
        dlq = env_int(env, "FLOWBRIDGE_DLQ_MAX_BYTES", max(16 * _MIB, 2 * max_bytes), minimum=1024)
        if dlq < max_bytes:
            raise ConfigError(
                f"FLOWBRIDGE_DLQ_MAX_BYTES={dlq} is below "
                f"FLOWBRIDGE_MAX_MESSAGE_BYTES={max_bytes}: "
                "a rejected message must always fit in the DLQ"
            )
        session = env_int(env, "FLOWBRIDGE_SESSION_TIMEOUT_MS", 6000, minimum=1000)
        return cls(
            group_id=env.get("FLOWBRIDGE_GROUP_ID", "").strip() or cls.group_id,
            max_message_bytes=max_bytes,
            dlq_max_bytes=dlq,
            fetch_max_wait_ms=env_int(env, "FLOWBRIDGE_FETCH_MAX_WAIT_MS", 10, minimum=0),
            session_timeout_ms=session,
            heartbeat_interval_ms=env_int(
                env, "FLOWBRIDGE_HEARTBEAT_MS", min(1000, session // 3), minimum=100
            ),
            max_poll_records=env_int(env, "FLOWBRIDGE_MAX_POLL_RECORDS", 500, minimum=1),
            outbox_sweep_s=env_float(env, "FLOWBRIDGE_OUTBOX_SWEEP_S", 1.0, minimum=0.05),
            outbox_lease_s=env_float(env, "FLOWBRIDGE_OUTBOX_LEASE_S", 10.0, minimum=1.0),
            shutdown_s=env_float(env, "FLOWBRIDGE_SHUTDOWN_S", 20.0, minimum=1.0),
            topic_partitions=env_int(env, "FLOWBRIDGE_TOPIC_PARTITIONS", 6, minimum=1),
            topic_replication=env_int(env, "FLOWBRIDGE_TOPIC_REPLICATION", 1, minimum=1),
            blueprints_reload_s=env_float(env, "FLOWBRIDGE_BLUEPRINTS_RELOAD_S", 2.0, minimum=0.0),
        )
