"""Scylla/Cassandra state store: the production backend, on scylla-driver.

What it guarantees, and how (``docs/state.md`` has the schema and the reasons):

- Every decision is one lightweight transaction (LWT, Paxos) on one partition:
  run creation (``IF NOT EXISTS``), run status changes (``IF status IN``), node
  transitions (``IF status IN`` the active statuses; ``begin_attempt`` is a
  compare-and-set on status, attempts and deliveries) and a join firing
  (``IF NOT EXISTS`` on the join's node record). Each node record is a
  partition of its own, so the completions of a fan-out never contend.
- Cassandra has no multi-partition transaction, so a conditional write stores
  its follow-up writes (successors, skips, arrivals, context, outbox, history,
  the index move) as an ``effects`` blob in the same LWT and then applies them.
  Each follow-up is idempotent. Whoever finds effects not yet marked applied (a
  redelivered task, a reader of that node, the next operation on that row)
  applies them again first, so a crash between the LWT and its follow-ups is
  repaired, and nobody acts on a completion whose successors are not written.
- A conditional write that times out is ambiguous: the row is re-read at SERIAL
  (which finishes any Paxos round in flight) and the write counts as applied
  only if the row carries this write's token (``lwt_op``).
- Retention: when a run finishes, its rows are rewritten ``USING TTL``; a live
  run never has a TTL. ``purge_expired`` has nothing to do.
- The driver's ``Cluster`` is created lazily and again after a fork: Celery's
  prefork pool forks after import and a driver's threads do not survive a fork.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import secrets
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote

from state.constants import (
    DEFAULT_RETENTION_S,
    NODE_ACTIVE,
    NODE_PENDING,
    NODE_RUNNING,
    NODE_SKIPPED,
    RUN_ACTIVE,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_PENDING,
    RUN_RUNNING,
    RUN_TERMINAL,
    RUN_WAITING,
    SCHEMA_VERSION,
    STATUS_BUCKET_S,
)
from state.errors import ConfigError, SchemaError, StateError
from state.models import (
    Arrival,
    CommitResult,
    HistoryEvent,
    NodeCompletion,
    NodeState,
    OutboxMessage,
    Run,
)
from state.scylla_schema import (
    BUCKETS_PER_DAY,
    INDEX_SHARDS,
    OUTBOX_PARTITION_S,
    OUTBOX_SETTLE_S,
    OUTBOX_SHARDS,
    STATEMENTS,
    Effects,
    FailRun,
    HistoryItem,
    IndexMove,
    decode_effects,
    encode_effects,
    keyspace_cql,
    migrations,
    table_cql,
)

__all__ = ["ScyllaConfig", "ScyllaStore", "parse_replication", "parse_scylla_url"]

Row = dict[str, Any]

log = logging.getLogger("flowbridge.state.scylla")

#: Rounds of read-then-compare-and-set before a contended write gives up.
MAX_CAS_ROUNDS: Final = 8
#: A run's unapplied effects older than this are repaired by ``get_run`` (younger ones are
#: probably being applied right now by the writer).
RUN_REPAIR_GRACE_S: Final = 10.0
#: How far ahead of now the retention rewrite stamps the effects marks (see ``_expire_row``).
MARK_MARGIN_US: Final = 5_000_000
#: Statements in flight at once when a read or write fans out.
CONCURRENCY: Final = 64
#: All run statuses (``list_runs()`` without a status reads the recent buckets of each).
RUN_STATUSES: Final = (
    RUN_PENDING,
    RUN_RUNNING,
    RUN_WAITING,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_CANCELLED,
)

DEFAULT_PORT: Final = 9042
DEFAULT_KEYSPACE: Final = "flowbridge"
_CONSISTENCY = frozenset(
    {"ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE"}
)
_SERIAL = frozenset({"SERIAL", "LOCAL_SERIAL"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
#: Cassandra's largest TTL (20 years).
_MAX_TTL_S: Final = 630_720_000


class _Unset:
    """Marker for "leave this column alone" (bound as the driver's UNSET_VALUE, no tombstone)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


# --- configuration --------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ScyllaConfig:
    """Where the cluster is and how to talk to it (``parse_scylla_url`` builds it)."""

    hosts: tuple[tuple[str, int], ...]
    keyspace: str = DEFAULT_KEYSPACE
    username: str | None = None
    #: Never printed: ``repr`` and ``redacted_url`` mask it.
    password: str | None = None
    #: Local datacenter for DC-aware routing (None: the first contact point's DC).
    dc: str | None = None
    consistency: str = "LOCAL_QUORUM"
    serial_consistency: str = "LOCAL_SERIAL"
    #: Keyspace replication, e.g. ``(("class", "SimpleStrategy"), ("replication_factor", "1"))``.
    replication: tuple[tuple[str, str], ...] = (
        ("class", "SimpleStrategy"),
        ("replication_factor", "1"),
    )
    ssl: bool = False
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    ssl_check_hostname: bool = False
    protocol_version: int | None = None
    retention_s: float = DEFAULT_RETENTION_S
    #: How far back the status index is read (``find_stalled``, ``list_runs``).
    index_lookback_s: float = DEFAULT_RETENTION_S
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 12.0

    def __repr__(self) -> str:
        return f"ScyllaConfig({self.redacted_url()})"

    def replication_map(self) -> dict[str, str]:
        """The replication options as a dict (for ``CREATE KEYSPACE``)."""
        return dict(self.replication)

    def redacted_url(self) -> str:
        """The URL with the password masked: safe to log."""
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":***"
            auth += "@"
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        opts: list[str] = []
        if self.dc is not None:
            opts.append(f"dc={self.dc}")
        if self.consistency != "LOCAL_QUORUM":
            opts.append(f"consistency={self.consistency}")
        if self.serial_consistency != "LOCAL_SERIAL":
            opts.append(f"serial_consistency={self.serial_consistency}")
        rep = self.replication_map()
        opts.append(f"replication={format_replication(rep)}")
        if self.ssl:
            opts.append("ssl=true")
        if self.protocol_version is not None:
            opts.append(f"protocol_version={self.protocol_version}")
        return f"scylla://{auth}{hosts}/{self.keyspace}?{'&'.join(opts)}"


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"state URL option {name}={value!r}: use true or false")


def _positive(name: str, value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        f = math.nan
    if not (f > 0 and math.isfinite(f)):
        raise ConfigError(f"state URL option {name}={value!r}: use a positive number")
    return f


def _name(what: str, value: str) -> str:
    # Datacenter names are spliced into CQL (replication) and logs: keep them plain.
    if not value or not set(value) <= _NAME_CHARS:
        raise ConfigError(f"{what} {value!r}: use letters, digits, '_', '-' or '.'")
    return value


def parse_replication(text: str) -> tuple[tuple[str, str], ...]:
    """Parse ``SimpleStrategy:1``, ``NetworkTopologyStrategy:3`` or ``...:dc1=3,dc2=2``."""
    cls, sep, spec = text.partition(":")
    cls = cls.strip()
    bad = ConfigError(
        f"state URL option replication={text!r}: use SimpleStrategy:RF, "
        "NetworkTopologyStrategy:RF or NetworkTopologyStrategy:dc1=RF,dc2=RF"
    )
    if not sep or not spec.strip():
        raise bad
    factors: list[tuple[str, str]] = []
    if cls.lower() == "simplestrategy":
        if not spec.strip().isdigit() or int(spec) < 1:
            raise bad
        return (("class", "SimpleStrategy"), ("replication_factor", str(int(spec))))
    if cls.lower() != "networktopologystrategy":
        raise bad
    if spec.strip().isdigit():
        if int(spec) < 1:
            raise bad
        return (("class", "NetworkTopologyStrategy"), ("replication_factor", str(int(spec))))
    for part in spec.split(","):
        dc, eq, rf = part.partition("=")
        dc, rf = dc.strip(), rf.strip()
        if not eq or not rf.isdigit() or int(rf) < 1 or dc in ("class", "replication_factor"):
            raise bad
        factors.append((_name("replication datacenter", dc), str(int(rf))))
    return (("class", "NetworkTopologyStrategy"), *factors)


def format_replication(rep: Mapping[str, str]) -> str:
    """The inverse of ``parse_replication``."""
    cls = rep.get("class", "SimpleStrategy")
    if "replication_factor" in rep:
        return f"{cls}:{rep['replication_factor']}"
    return cls + ":" + ",".join(f"{k}={v}" for k, v in rep.items() if k != "class")


def _hosts(text: str, url: str) -> tuple[tuple[str, int], ...]:
    hosts: list[tuple[str, int]] = []
    for raw in text.split(","):
        part = raw.strip()
        port = DEFAULT_PORT
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ConfigError(f"state URL {url!r}: bad host {part!r}")
                port_s = rest[1:]
            else:
                port_s = ""
        elif part.count(":") == 1:
            host, _, port_s = part.partition(":")
        else:
            host, port_s = part, ""  # a bare IPv6 address has no port
        if port_s:
            if not port_s.isdigit() or not 0 < int(port_s) < 65536:
                raise ConfigError(f"state URL {url!r}: bad port in {part!r}")
            port = int(port_s)
        if not host:
            raise ConfigError(f"state URL {url!r}: empty host in the host list")
        hosts.append((host, port))
    return tuple(hosts)


def parse_scylla_url(url: str, *, env: Mapping[str, str] | None = None) -> ScyllaConfig:
    """Parse ``scylla://[user:pass@]host1[:port],host2/keyspace?dc=NAME&...`` (no connection).

    Options: ``dc``, ``consistency`` (LOCAL_QUORUM), ``serial_consistency``
    (LOCAL_SERIAL), ``replication`` (SimpleStrategy:1), ``ssl``, ``ssl_ca``,
    ``ssl_cert``, ``ssl_key``, ``ssl_check_hostname``, ``protocol_version``,
    ``retention_days`` (30), ``index_lookback_days`` (30), ``connect_timeout``
    and ``request_timeout`` (seconds). Credentials missing from the URL come
    from ``SCYLLA_USERNAME``/``SCYLLA_PASSWORD`` in ``env``.
    """
    env = env or {}
    # The message never quotes the URL itself: it may hold a password.
    where = "FLOWBRIDGE_STATE_URL"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("scylla", "cassandra"):
        raise ConfigError(f"{where}: a Scylla URL starts with scylla:// (or cassandra://)")
    rest = rest.partition("#")[0]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    if username is None and env.get("SCYLLA_USERNAME"):
        username = env["SCYLLA_USERNAME"]
    if password is None and env.get("SCYLLA_PASSWORD"):
        password = env["SCYLLA_PASSWORD"]
    if password is not None and username is None:
        raise ConfigError(f"{where}: a password without a user name (set SCYLLA_USERNAME)")
    if not hostlist.strip():
        raise ConfigError(f"{where}: no host in the Scylla URL")
    hosts = _hosts(hostlist, where)
    keyspace = unquote(path.strip("/")) or DEFAULT_KEYSPACE
    if not (keyspace[0].isalpha() and keyspace.replace("_", "a").isalnum() and len(keyspace) <= 48):
        raise ConfigError(
            f"{where}: keyspace {keyspace!r} is not a valid CQL name (a letter, then letters, "
            "digits or '_', at most 48 characters)"
        )
    opts: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "dc":
            opts["dc"] = _name("state URL option dc", value)
        elif key in ("consistency", "serial_consistency"):
            level = value.strip().upper()
            allowed = _CONSISTENCY if key == "consistency" else _SERIAL
            if level not in allowed:
                raise ConfigError(
                    f"state URL option {key}={value!r}: use one of {', '.join(sorted(allowed))}"
                )
            opts[key] = level
        elif key == "replication":
            opts["replication"] = parse_replication(value)
        elif key in ("ssl", "ssl_check_hostname"):
            opts[key] = _bool(key, value)
        elif key in ("ssl_ca", "ssl_cert", "ssl_key"):
            if not value:
                raise ConfigError(f"state URL option {key} is empty: give a file path")
            opts[key] = value
            opts["ssl"] = opts.get("ssl", True)
        elif key == "protocol_version":
            if value not in ("4", "5"):
                # Version 3 cannot leave a bound column unset (we never write needless nulls).
                raise ConfigError(f"state URL option protocol_version={value!r}: use 4 or 5")
            opts["protocol_version"] = int(value)
        elif key == "retention_days":
            opts["retention_s"] = min(_positive(key, value) * 86400, float(_MAX_TTL_S))
        elif key == "index_lookback_days":
            opts["index_lookback_s"] = _positive(key, value) * 86400
        elif key == "connect_timeout":
            opts["connect_timeout_s"] = _positive(key, value)
        elif key == "request_timeout":
            opts["request_timeout_s"] = _positive(key, value)
        else:
            raise ConfigError(
                f"state URL option {key!r} is unknown (known: dc, consistency, "
                "serial_consistency, replication, ssl, ssl_ca, ssl_cert, ssl_key, "
                "ssl_check_hostname, protocol_version, retention_days, index_lookback_days, "
                "connect_timeout, request_timeout)"
            )
    if opts.get("ssl") is False and any(k in opts for k in ("ssl_ca", "ssl_cert", "ssl_key")):
        raise ConfigError("state URL sets ssl=false together with ssl_ca/ssl_cert/ssl_key")
    return ScyllaConfig(
        hosts=hosts, keyspace=keyspace, username=username, password=password, **opts
    )


# --- small helpers --------------------------------------------------------------------------
def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _u(value: Any) -> Any:
    """None becomes UNSET: an INSERT that binds null writes a tombstone for nothing."""
    return UNSET if value is None else value


def bucket_of(ts: float) -> int:
    """The status-index bucket of a time (``STATUS_BUCKET_S`` wide)."""
    return int(ts // STATUS_BUCKET_S)


def shard_of(key: str, shards: int) -> int:
    """A stable shard number for ``key`` (crc32, identical in every process)."""
    return zlib.crc32(key.encode()) % shards


def timeuuid(us: int) -> uuid.UUID:
    """A version-1 UUID for the time ``us`` (µs since the epoch) with random node bits."""
    ts = us * 10 + 0x01B21DD213814000
    rand = secrets.randbits(62)
    clock_seq = rand & 0x3FFF
    return uuid.UUID(
        fields=(
            ts & 0xFFFFFFFF,
            (ts >> 32) & 0xFFFF,
            ((ts >> 48) & 0x0FFF) | 0x1000,
            (clock_seq >> 8) | 0x80,
            clock_seq & 0xFF,
            rand >> 14,
        )
    )


def _padded(statuses: Collection[str], n: int = 6) -> tuple[str, ...]:
    """``n`` values for ``IN (?, ..., ?)``: the set, repeated (an empty set matches no status)."""
    values = sorted(statuses) or ["\x00none"]
    return tuple(values[i % len(values)] for i in range(n))


def _pending_effects(row: Row) -> Effects | None:
    """The row's effects if they are not yet marked applied."""
    if row.get("lwt_op") in (row.get("effects_done") or ()):
        return None
    eff = decode_effects(row.get("effects"))
    return None if eff is None or eff.empty else eff


def _run_from(row: Row | None) -> Run | None:
    if row is None or row.get("status") is None:
        return None
    return Run(
        run_id=row["run_id"],
        blueprint_id=row.get("blueprint_id") or "",
        version=row.get("version") or "",
        status=row["status"],
        input=_loads(row.get("input")),
        snapshot=_loads(row.get("snapshot")) or {},
        output=_loads(row.get("output")),
        error=row.get("error"),
        fence=row.get("fence") or 0,
        created_at=row.get("created_at") or 0.0,
        updated_at=max(row.get("status_at") or 0.0, row.get("progress_at") or 0.0),
    )


def _node_from(row: Row) -> NodeState:
    return NodeState(
        run_id=row["run_id"],
        node_id=row["node_id"],
        iteration=row["iteration"],
        status=row["status"],
        attempts=row.get("attempts") or 0,
        deliveries=row.get("deliveries") or 0,
        output=_loads(row.get("output")),
        action=row.get("action"),
        edges_taken=tuple(row.get("edges_taken") or ()),
        error=row.get("error"),
        updated_at=row.get("updated_at") or 0.0,
    )


class _Ambiguous(Exception):
    """A conditional write timed out: it may or may not have been applied."""


# --- the driver -----------------------------------------------------------------------------
class _Conn:
    """One process's driver Cluster and Session, with its prepared statements."""

    def __init__(self, config: ScyllaConfig):
        # The driver is imported here, not at module import: parsing a URL needs no driver.
        from cassandra import ConsistencyLevel
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
        from cassandra.query import UNSET_VALUE, dict_factory

        self.config = config
        self.unset = UNSET_VALUE
        cl = getattr(ConsistencyLevel, config.consistency)
        serial = getattr(ConsistencyLevel, config.serial_consistency)

        def profile(level: Any) -> Any:
            # Token-aware over DC-aware: the scylla-driver then routes to the owning shard too.
            return ExecutionProfile(
                load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.dc)),
                consistency_level=level,
                serial_consistency_level=serial,
                request_timeout=config.request_timeout_s,
                row_factory=dict_factory,
            )

        kwargs: dict[str, Any] = {
            "contact_points": list(config.hosts),
            "execution_profiles": {EXEC_PROFILE_DEFAULT: profile(cl), "serial": profile(serial)},
            "connect_timeout": config.connect_timeout_s,
            "control_connection_timeout": config.connect_timeout_s,
            "max_schema_agreement_wait": 30,
        }
        if config.username is not None:
            kwargs["auth_provider"] = PlainTextAuthProvider(
                username=config.username, password=config.password or ""
            )
        if config.ssl:
            try:
                kwargs["ssl_context"] = _ssl_context(config)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ConfigError(
                    f"{config.redacted_url()}: cannot load the TLS files (ssl_ca, ssl_cert, "
                    f"ssl_key): {exc}"
                ) from exc
        if config.protocol_version is not None:
            kwargs["protocol_version"] = config.protocol_version
        self.cluster = Cluster(**kwargs)
        try:
            self.session = self.cluster.connect()
        except Exception as exc:
            self.cluster.shutdown()
            raise StateError(
                f"cannot connect to {config.redacted_url()}: {type(exc).__name__}: {exc}"
            ) from exc
        self._prepared: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._errors = _driver_errors()

    def shutdown(self) -> None:
        """Close every connection of this Cluster."""
        self.cluster.shutdown()

    def _statement(self, name: str) -> Any:
        stmt = self._prepared.get(name)
        if stmt is None:
            cql = STATEMENTS[name].format(ks=self.config.keyspace)
            try:
                stmt = self.session.prepare(cql)
            except Exception as exc:
                raise self.translate(name, exc) from exc
            with self._lock:
                self._prepared[name] = stmt
        return stmt

    def bind(self, name: str, params: Sequence[Any]) -> Any:
        """Bind ``params`` to the prepared statement ``name`` (UNSET leaves a column alone)."""
        values = [self.unset if v is UNSET else v for v in params]
        return self._statement(name).bind(values)

    def translate(self, name: str, exc: Exception) -> Exception:
        """Map a driver error to ours; LWT timeouts become ``_Ambiguous``."""
        lwt = " IF " in STATEMENTS.get(name, "")
        if lwt and isinstance(exc, self._errors["ambiguous"]):
            return _Ambiguous(f"{name}: {type(exc).__name__}: {exc}")
        text = str(exc)
        if isinstance(exc, self._errors["invalid"]) and (
            "unconfigured table" in text.lower() or "does not exist" in text.lower()
        ):
            return SchemaError(
                f"Scylla store {self.config.redacted_url()} has no schema ({text}): "
                "run `flowbridge migrate`"
            )
        return StateError(
            f"Scylla store {self.config.redacted_url()}: {name} failed: "
            f"{type(exc).__name__}: {text}"
        )

    def run_all(
        self, items: Sequence[tuple[str, Sequence[Any]]], *, serial: bool = False
    ) -> list[list[Row] | Exception]:
        """Run statements concurrently; each result is its rows or its (translated) error."""
        profile = "serial" if serial else None
        out: list[list[Row] | Exception] = []
        for start in range(0, len(items), CONCURRENCY):
            chunk = items[start : start + CONCURRENCY]
            futures = []
            for name, params in chunk:
                bound = self.bind(name, params)
                if profile is None:
                    futures.append(self.session.execute_async(bound))
                else:
                    futures.append(self.session.execute_async(bound, execution_profile=profile))
            for (name, _), fut in zip(chunk, futures, strict=True):
                try:
                    out.append(list(fut.result()))  # iterating fetches any further pages
                except Exception as exc:  # driver errors have no common base worth naming
                    out.append(self.translate(name, exc))
        return out

    def execute(self, name: str, params: Sequence[Any], *, serial: bool = False) -> list[Row]:
        """Run one statement; raise its error."""
        return _ok(self.run_all([(name, params)], serial=serial))[0]

    def ddl(self, cql: str) -> None:
        """Run one schema statement (DDL is not prepared: it runs once per migrate)."""
        from cassandra.query import SimpleStatement

        try:
            self.session.execute(SimpleStatement(cql), timeout=120)
        except Exception as exc:
            raise SchemaError(
                f"Scylla store {self.config.redacted_url()}: schema change failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def wait_for_schema_agreement(self) -> None:
        """Wait until every node reports the same schema version."""
        wait = getattr(self.session, "wait_for_schema_agreement", None)
        if wait is not None:
            agreed = wait(wait_time=60)
        else:  # scylla-driver < 3.30
            agreed = self.cluster.control_connection.wait_for_schema_agreement(wait_time=60)
        if not agreed:
            raise SchemaError(
                f"Scylla store {self.config.redacted_url()}: nodes did not agree on the schema "
                "within 60 s; check that all nodes are up, then run `flowbridge migrate` again"
            )

    def scylla_tablets(self) -> bool:
        """Whether this is a Scylla cluster whose new keyspaces may use tablets."""
        from cassandra.query import SimpleStatement

        try:
            rows = list(
                self.session.execute(
                    SimpleStatement(
                        "SELECT supported_features FROM system.local WHERE key = 'local'"
                    )
                )
            )
        except self._errors["invalid"]:
            return False  # Cassandra: no such column
        features = (rows[0].get("supported_features") or "") if rows else ""
        return "TABLETS" in features.split(",")


def _ok(results: Iterable[list[Row] | Exception]) -> list[list[Row]]:
    """Raise the first error among ``results`` (an ambiguous LWT becomes a StateError)."""
    out: list[list[Row]] = []
    for r in results:
        if isinstance(r, _Ambiguous):
            raise StateError(f"a conditional write timed out and was not settled: {r}")
        if isinstance(r, Exception):
            raise r
        out.append(r)
    return out


def _driver_errors() -> dict[str, tuple[type[BaseException], ...]]:
    from cassandra import InvalidRequest, OperationTimedOut, Timeout, WriteFailure

    return {
        # After any of these an LWT may or may not have been applied (incl. a timeout in the
        # Paxos commit phase, reported as a plain write timeout).
        "ambiguous": (Timeout, WriteFailure, OperationTimedOut),
        "invalid": (InvalidRequest,),
    }


def _ssl_context(config: ScyllaConfig) -> Any:
    import ssl

    ctx = ssl.create_default_context(cafile=config.ssl_ca)
    # Clusters are usually reached by IP and node certificates rarely name it: verify the
    # chain always, the host name only when asked.
    ctx.check_hostname = config.ssl_check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if config.ssl_cert is not None:
        ctx.load_cert_chain(config.ssl_cert, config.ssl_key)
    return ctx


# --- the store ------------------------------------------------------------------------------
class ScyllaStore:
    """A ``StateStore`` on Scylla or Cassandra (scylla-driver), safe across processes and hosts."""

    def __init__(
        self,
        config: ScyllaConfig,
        *,
        retention_s: float | None = None,
        index_lookback_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ):
        """Use the cluster in ``config``; nothing is connected until first use.

        ``clock`` also stamps the writes sent to the cluster (``USING TIMESTAMP``):
        keep it the wall clock (tests may shift it a little).
        """
        self.config = config
        self.retention_s = config.retention_s if retention_s is None else retention_s
        self.index_lookback_s = (
            config.index_lookback_s if index_lookback_s is None else index_lookback_s
        )
        #: TTL of a finished run's rows.
        self._ttl = min(max(1, math.ceil(self.retention_s)), _MAX_TTL_S)
        #: TTL of a live run's index hints and bucket entries: they are never read after it.
        self._hint_ttl = min(math.ceil(self.index_lookback_s) + 86400, _MAX_TTL_S)
        self._clock = clock
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._ts_lock = threading.Lock()
        self._conn: _Conn | None = None
        self._last_us = 0
        self._bucket_dirs: set[tuple[str, int]] = set()
        self._outbox_locs: dict[str, set[tuple[int, float]]] = {}
        self._outbox_origin: float | None = None

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str], retention_s: float | None = None
    ) -> ScyllaStore:
        """Build a store from ``FLOWBRIDGE_STATE_URL`` (no connection yet).

        ``retention_s`` (e.g. from ``FLOWBRIDGE_RETENTION_DAYS``) wins over the URL's
        ``retention_days``.
        """
        return cls(parse_scylla_url(url, env=env), retention_s=retention_s)

    def __repr__(self) -> str:
        return f"ScyllaStore({self.config.redacted_url()})"

    # --- connections ------------------------------------------------------------------------
    def _c(self) -> _Conn:
        if self._pid != os.getpid():
            # A forked child: the parent's Cluster is unusable here (its threads are gone) and
            # shutting it down could disturb the parent's sockets, so it is simply dropped.
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._ts_lock = threading.Lock()
            self._conn = None
            self._bucket_dirs = set()
            self._outbox_locs = {}
        conn = self._conn
        if conn is None:
            with self._lock:
                if self._conn is None:
                    self._conn = _Conn(self.config)
                conn = self._conn
        return conn

    def close(self) -> None:
        """Shut this process's Cluster down."""
        conn = self._conn
        if conn is not None and self._pid == os.getpid():
            conn.shutdown()
        self._conn = None

    def migrate(self) -> None:
        """Create keyspace and tables if missing, wait for schema agreement, record the version."""
        c = self._c()
        ks = self.config.keyspace
        c.ddl(keyspace_cql(ks, self.config.replication_map(), tablets_off=c.scylla_tablets()))
        for cql in table_cql(ks):
            c.ddl(cql)
        c.wait_for_schema_agreement()
        rows = c.execute("version_get", (), serial=True)
        for _ in range(MAX_CAS_ROUNDS):
            if rows:
                break
            # An ambiguous timeout is settled by the read that follows.
            self._lwt("version_init", (SCHEMA_VERSION, self._clock()), None, lambda: None)
            rows = c.execute("version_get", (), serial=True)
        if not rows:
            raise SchemaError(
                f"Scylla store {self.config.redacted_url()}: cannot record the schema version"
            )
        stored = int(rows[0]["version"])
        if stored > SCHEMA_VERSION:
            raise SchemaError(
                f"Scylla store {self.config.redacted_url()} has schema {stored}, newer than this "
                f"flowbridge ({SCHEMA_VERSION}): upgrade flowbridge"
            )
        for version, statements in migrations(ks, from_version=stored, to_version=SCHEMA_VERSION):
            for cql in statements:
                c.ddl(cql)
            c.wait_for_schema_agreement()
            self._lwt("version_set", (version, version - 1), None, lambda: None)

    # --- primitives -------------------------------------------------------------------------
    def _now(self) -> tuple[float, int]:
        """Now as (seconds, µs), strictly increasing in this process (µs are write timestamps)."""
        with self._ts_lock:
            us = int(self._clock() * 1_000_000)
            if us <= self._last_us:
                us = self._last_us + 1
            self._last_us = us
        return us / 1_000_000, us

    def _event(self, kind: str, node_id: str | None, data: Any) -> HistoryItem:
        return HistoryItem(
            event_id=str(timeuuid(self._now()[1])), kind=kind, node_id=node_id, data=data
        )

    def _lwt(
        self,
        name: str,
        params: Sequence[Any],
        op: str | None,
        reread: Callable[[], Row | None] | None,
    ) -> tuple[bool, Row | None]:
        """Run one conditional write: (applied, the LWT's result row or the SERIAL re-read)."""
        result = self._c().run_all([(name, params)])[0]
        if isinstance(result, _Ambiguous):
            if reread is None:
                raise StateError(f"a conditional write timed out: {result}; retry")
            row = reread()
            return row is not None and op is not None and row.get("lwt_op") == op, row
        if isinstance(result, Exception):
            raise result
        row = result[0] if result else {}
        return bool(row.get("[applied]")), row

    def _run_row(self, run_id: str, *, serial: bool = False) -> Row | None:
        rows = self._c().execute("run_get", (run_id,), serial=serial)
        # A row left with only its key (an expired run's marker) is no run.
        return rows[0] if rows and rows[0].get("status") is not None else None

    def _node_row(
        self, run_id: str, node_id: str, iteration: int, *, serial: bool = False
    ) -> Row | None:
        rows = self._c().execute("node_get", (run_id, node_id, iteration), serial=serial)
        return rows[0] if rows and rows[0].get("status") is not None else None

    def _run_and_node(
        self, run_id: str, node_id: str, iteration: int
    ) -> tuple[Row | None, Row | None]:
        runs, nodes = _ok(
            self._c().run_all([("run_get", (run_id,)), ("node_get", (run_id, node_id, iteration))])
        )
        run = runs[0] if runs and runs[0].get("status") is not None else None
        node = nodes[0] if nodes and nodes[0].get("status") is not None else None
        return run, node

    def _ttl_for(self, run: Row | None) -> int:
        """0 (no TTL) while the run is live; the retention TTL once it finished (or is gone)."""
        return 0 if run is not None and run["status"] in RUN_ACTIVE else self._ttl

    def _stamp(self, rows: Iterable[OutboxMessage], at: float) -> tuple[OutboxMessage, ...]:
        return tuple(replace(m, created_at=at) for m in rows)

    # --- follow-up writes -------------------------------------------------------------------
    def _outbox_writes(
        self, msgs: Iterable[OutboxMessage], ts: int
    ) -> list[tuple[str, tuple[Any, ...]]]:
        now = self._clock()
        writes: list[tuple[str, tuple[Any, ...]]] = []
        for m in msgs:
            created = m.created_at
            if created < now - OUTBOX_SETTLE_S / 2:
                # A late replay: the relay's cursor may be past that time; publish it again
                # (same id) rather than lose it.
                created, ts = now, self._now()[1]
            writes.append(
                (
                    "outbox_put",
                    (
                        int(created // OUTBOX_PARTITION_S),
                        shard_of(m.id, OUTBOX_SHARDS),
                        created,
                        m.id,
                        m.topic,
                        _u(m.key),
                        _dumps(m.value),
                        ts,
                    ),
                )
            )
        return writes

    def _history_writes(
        self, run_id: str, items: Iterable[HistoryItem], at: float, ttl: int, ts: int
    ) -> list[tuple[str, tuple[Any, ...]]]:
        return [
            (
                "history_put",
                (
                    run_id,
                    uuid.UUID(h.event_id),
                    at,
                    h.kind,
                    _u(h.node_id),
                    UNSET if h.data is None else _dumps(h.data),
                    ttl,
                    ts,
                ),
            )
            for h in items
        ]

    def _index_writes(
        self, run_id: str, move: IndexMove, ts: int
    ) -> list[tuple[str, tuple[Any, ...]]]:
        shard = shard_of(run_id, INDEX_SHARDS)
        ttl = self._ttl if move.status in RUN_TERMINAL else self._hint_ttl
        writes: list[tuple[str, tuple[Any, ...]]] = [
            ("index_put", (move.status, move.bucket, shard, run_id, ttl, ts))
        ]
        with self._ts_lock:
            first = (move.status, move.bucket) not in self._bucket_dirs
            if first:
                if len(self._bucket_dirs) > 256:
                    self._bucket_dirs = {k for k in self._bucket_dirs if k[1] >= move.bucket - 2}
                self._bucket_dirs.add((move.status, move.bucket))
        if first:
            # One directory write per (status, bucket) per process: it is the same row each time.
            day = move.bucket // BUCKETS_PER_DAY
            writes.append(("buckets_put", (move.status, day, move.bucket, ttl + STATUS_BUCKET_S)))
        old = (move.old_status, move.old_bucket)
        if old[0] is not None and old[1] is not None and old != (move.status, move.bucket):
            writes.append(("index_del", (ts, old[0], old[1], shard, run_id)))
        return writes

    def _touch_writes(self, run: Row, at: float, ts: int) -> list[tuple[str, tuple[Any, ...]]]:
        """Record progress: ``progress_at`` and the index hint's bucket."""
        new = bucket_of(at)
        writes: list[tuple[str, tuple[Any, ...]]] = [
            # Always with a TTL: a progress stamp that outlives its run would keep a ghost row.
            ("run_progress", (self._ttl, ts, at, new, run["run_id"]))
        ]
        if run.get("bucket") != new:
            move = IndexMove(
                status=run["status"],
                bucket=new,
                old_status=run["status"],
                old_bucket=run.get("bucket"),
            )
            writes += self._index_writes(run["run_id"], move, ts)
        return writes

    def _create_nodes(
        self, run_id: str, iteration: int, ids: Sequence[str], status: str, at: float, ttl: int
    ) -> None:
        """Create node records ``IF NOT EXISTS`` (who creates them does not matter)."""
        if not ids:
            return
        items = [
            ("node_create", (run_id, n, iteration, status, at, uuid.uuid4().hex, UNSET, ttl))
            for n in ids
        ]
        for (_, params), result in zip(items, self._c().run_all(items), strict=True):
            if isinstance(result, _Ambiguous):
                for _ in range(MAX_CAS_ROUNDS):
                    reread = functools.partial(
                        self._node_row, run_id, params[1], iteration, serial=True
                    )
                    if reread() is not None:
                        break
                    self._lwt("node_create", params, None, reread)
                else:
                    raise StateError(f"run {run_id!r}: creating node {params[1]!r} timed out")
            elif isinstance(result, Exception):
                raise result

    def _dir_writes(
        self, run_id: str, iteration: int, ids: Iterable[str], at: float, ttl: int, ts: int
    ) -> list[tuple[str, tuple[Any, ...]]]:
        return [("dir_put", (run_id, iteration, n, at, ttl, ts)) for n in dict.fromkeys(ids)]

    def _apply_node_effects(
        self, key: tuple[str, str, int], eff: Effects, op: str, run: Row | None
    ) -> None:
        """Apply a node write's effects (the live-run parts only on a live run), then mark them."""
        run_id, _, iteration = key
        live = run is not None and run["status"] in RUN_ACTIVE
        ttl = self._ttl_for(run)
        c = self._c()
        writes = self._history_writes(run_id, eff.history, eff.at, ttl, eff.ts)
        if live and run is not None:
            joins = [a[0] for a in eff.arrivals]
            fallback = [eff.fallback] if eff.fallback is not None else []
            # The directory first: every record and arrival set must be findable by retention.
            _ok(
                c.run_all(
                    self._dir_writes(
                        run_id,
                        iteration,
                        [*eff.pending, *eff.skipped, *joins, *fallback],
                        eff.at,
                        0,
                        eff.ts,
                    )
                )
            )
            writes += [
                ("arrival_put", (run_id, j, iteration, pred, outcome, 0, eff.ts))
                for j, pred, outcome in eff.arrivals
            ]
            writes += [
                ("context_put", (run_id, k, _dumps(v), eff.at, 0, eff.ts))
                for k, v in eff.context.items()
            ]
            writes += self._outbox_writes(eff.outbox, eff.ts)
            if eff.touch or eff.fallback is not None:
                writes += self._touch_writes(run, eff.at, eff.ts)
        _ok(c.run_all(writes))
        if live:
            self._create_nodes(run_id, iteration, eff.pending, NODE_PENDING, eff.at, 0)
            self._create_nodes(run_id, iteration, eff.skipped, NODE_SKIPPED, eff.at, 0)
            if eff.fallback is not None:
                self._create_nodes(run_id, iteration, [eff.fallback], NODE_PENDING, eff.at, 0)
            elif eff.fail_run is not None:
                failed, _ = self._transition(
                    run_id,
                    from_=RUN_ACTIVE,
                    to=RUN_FAILED,
                    error=eff.fail_run.error,
                    data={"error": eff.fail_run.error},
                    outbox=eff.fail_run.outbox,
                )
                if failed:
                    ttl = self._ttl  # the run's rows now expire: so does this mark
        # Stamped with the op's time: a late duplicate mark loses to the retention rewrite.
        c.execute("node_effects_done", (ttl, eff.ts, {op}, *key))

    def _repair_node(self, row: Row, run: Row | None = None, *, reread_run: bool = True) -> None:
        """Apply a node row's unapplied effects, if any (the repair path)."""
        eff = _pending_effects(row)
        if eff is None:
            return
        if reread_run or run is None:
            run = self._run_row(row["run_id"])
        self._apply_node_effects(
            (row["run_id"], row["node_id"], row["iteration"]), eff, row["lwt_op"], run
        )

    def _apply_run_effects(self, run_id: str, eff: Effects, op: str) -> None:
        """Apply a run write's effects, then mark them."""
        c = self._c()
        terminal = eff.index is not None and eff.index.status in RUN_TERMINAL
        ttl = self._ttl if terminal else 0
        if eff.start_nodes:
            _ok(c.run_all(self._dir_writes(run_id, 0, eff.start_nodes, eff.at, ttl, eff.ts)))
        writes = self._history_writes(run_id, eff.history, eff.at, ttl, eff.ts)
        writes += self._outbox_writes(eff.outbox, eff.ts)
        if eff.index is not None:
            writes += self._index_writes(run_id, eff.index, eff.ts)
            writes.append(("run_progress", (self._ttl, eff.ts, eff.at, eff.index.bucket, run_id)))
        _ok(c.run_all(writes))
        self._create_nodes(run_id, 0, eff.start_nodes, NODE_PENDING, eff.at, ttl)
        if eff.cancel_nodes is not None:
            self._cancel_nodes(run_id, eff.cancel_nodes, eff.at)
        if eff.finish:
            self._expire_run(run_id)
        c.execute("run_effects_done", (ttl, eff.ts, {op}, run_id))

    def _repair_run(self, row: Row) -> None:
        eff = _pending_effects(row)
        if eff is not None:
            self._apply_run_effects(row["run_id"], eff, row["lwt_op"])

    # --- transitions ------------------------------------------------------------------------
    def _transition(
        self,
        run_id: str,
        *,
        from_: Collection[str],
        to: str,
        output: Any = UNSET,
        error: Any = UNSET,
        data: Any = None,
        outbox: Sequence[OutboxMessage] = (),
        cancel_reason: str | None = None,
        before: Row | None = None,
    ) -> tuple[bool, Row | None]:
        """Move the run to ``to`` if its status is in ``from_``: (applied, the row before)."""
        row = before if before is not None else self._run_row(run_id)
        for _ in range(MAX_CAS_ROUNDS):
            if row is None:
                return False, None
            if row["status"] not in from_:
                self._repair_run(row)
                return False, row
            at, ts = self._now()
            op = uuid.uuid4().hex
            terminal = to in RUN_TERMINAL
            eff = Effects(
                at=at,
                ts=ts,
                history=(self._event(f"run.{to}", None, data),),
                outbox=self._stamp(outbox, at),
                index=IndexMove(
                    status=to,
                    bucket=bucket_of(at),
                    old_status=row["status"],
                    old_bucket=row.get("bucket"),
                ),
                finish=terminal,
                cancel_nodes=cancel_reason,
            )
            params = (
                self._ttl if terminal else 0,
                to,
                at,
                output,
                error,
                op,
                encode_effects(eff),
                run_id,
                *_padded(from_),
            )
            applied, _ = self._lwt(
                "run_transition", params, op, lambda: self._run_row(run_id, serial=True)
            )
            if applied:
                self._apply_run_effects(run_id, eff, op)
                return True, row
            # Our read was stale or someone moved first: decide again on a linearizable read.
            row = self._run_row(run_id, serial=True)
        raise StateError(f"run {run_id!r}: status change to {to!r} lost {MAX_CAS_ROUNDS} races")

    def _cancel_nodes(self, run_id: str, reason: str, at: float) -> None:
        """Cancel every active node record of the run (each conditionally)."""
        c = self._c()
        dirs = c.execute("dir_get", (run_id,))
        keys = [(run_id, d["node_id"], d["iteration"]) for d in dirs]
        rows = _ok(c.run_all([("node_get", k) for k in keys]))
        active = [
            k for k, r in zip(keys, rows, strict=True) if r and r[0].get("status") in NODE_ACTIVE
        ]
        for _ in range(MAX_CAS_ROUNDS):
            items = [
                ("node_cancel", (self._ttl, reason, at, uuid.uuid4().hex, None, *k)) for k in active
            ]
            unsure = []
            for k, result in zip(active, c.run_all(items), strict=True):
                if isinstance(result, _Ambiguous):
                    unsure.append(k)
                elif isinstance(result, Exception):
                    raise result
            if not unsure:
                return
            # Timed out: cancel again whatever a linearizable read still finds active.
            again = _ok(c.run_all([("node_get", k) for k in unsure], serial=True))
            active = [
                k
                for k, r in zip(unsure, again, strict=True)
                if r and r[0].get("status") in NODE_ACTIVE
            ]
        raise StateError(f"run {run_id!r}: cancelling its nodes timed out {MAX_CAS_ROUNDS} times")

    # --- retention --------------------------------------------------------------------------
    def _expire_run(self, run_id: str) -> None:
        """Give every row of a finished run the retention TTL (its live rows have none)."""
        c = self._c()
        ttl = self._ttl
        now_ts = self._now()[1]
        dirs = c.execute("dir_get", (run_id,))
        keys = [(run_id, d["node_id"], d["iteration"]) for d in dirs]
        node_rows = _ok(c.run_all([("node_get", k) for k in keys]))
        for rows in node_rows:
            if rows and rows[0].get("status") is not None:
                self._expire_node(rows[0])
        reads = _ok(
            c.run_all(
                [("context_get", (run_id,)), ("history_get", (run_id,))]
                + [("arrival_get", k) for k in keys]
            )
        )
        ctx, hist, arrivals = reads[0], reads[1], reads[2:]
        writes: list[tuple[str, tuple[Any, ...]]] = []
        for r in ctx:
            writes.append(
                (
                    "context_put",
                    (run_id, r["key"], r["value"], r["written_at"], ttl, max(now_ts, r["wt"] + 1)),
                )
            )
        for r in hist:
            writes.append(
                (
                    "history_put",
                    (
                        run_id,
                        r["event_id"],
                        r["at"],
                        r["kind"],
                        _u(r["node_id"]),
                        _u(r["data"]),
                        ttl,
                        max(now_ts, r["wt"] + 1),
                    ),
                )
            )
        for k, rows in zip(keys, arrivals, strict=True):
            for r in rows:
                writes.append(
                    (
                        "arrival_put",
                        (*k, r["predecessor"], r["outcome"], ttl, max(now_ts, r["wt"] + 1)),
                    )
                )
        for d in dirs:
            writes.append(
                (
                    "dir_put",
                    (run_id, d["iteration"], d["node_id"], d["at"], ttl, max(now_ts, d["wt"] + 1)),
                )
            )
        _ok(c.run_all(writes))
        self._expire_row("run", (run_id,))

    def _expire_node(self, row: Row) -> None:
        self._repair_node(row)  # a finished run: only the history part applies
        self._expire_row("node", (row["run_id"], row["node_id"], row["iteration"]))

    def _expire_row(self, kind: str, key: tuple[Any, ...]) -> None:
        """Rewrite a run or node row's LWT columns with the TTL (compare-and-set on ``lwt_op``)."""
        c = self._c()
        for _ in range(MAX_CAS_ROUNDS):
            rows = c.execute(f"{kind}_get", key, serial=True)
            if not rows or rows[0].get("status") is None:
                return
            r = rows[0]
            if kind == "node":
                params: tuple[Any, ...] = (
                    self._ttl,
                    r["status"],
                    r["attempts"],
                    r["deliveries"],
                    _u(r["output"]),
                    _u(r["action"]),
                    _u(r["edges_taken"]),
                    _u(r["error"]),
                    r["updated_at"],
                    r["lwt_op"],
                    _u(r["effects"]),
                    *key,
                    r["lwt_op"],
                )
            else:
                params = (
                    self._ttl,
                    _u(r["blueprint_id"]),
                    _u(r["version"]),
                    _u(r["input"]),
                    _u(r["snapshot"]),
                    _u(r["created_at"]),
                    r["status"],
                    _u(r["status_at"]),
                    _u(r["output"]),
                    _u(r["error"]),
                    _u(r["fence"]),
                    _u(r["reconciled_at"]),
                    r["lwt_op"],
                    _u(r["effects"]),
                    *key,
                    r["lwt_op"],
                )
            result = c.run_all([(f"{kind}_rewrite", params)])[0]
            if isinstance(result, _Ambiguous):
                continue  # the rewrite is idempotent (lwt_op is unchanged): just do it again
            if isinstance(result, Exception):
                raise result
            if not result or not result[0].get("[applied]"):
                continue  # a conditional write got in between: read again
            tail = (*key,)
            marker_ts = max(self._now()[1], (r.get("status_wt") or 0) + 1)
            writes: list[tuple[str, tuple[Any, ...]]] = [
                # The INSERT that created the row gave it a row marker without a TTL; a newer
                # marker with one replaces it (it must be newer than the creating write).
                (f"{kind}_marker", (*tail, self._ttl, marker_ts)),
            ]
            if r.get("effects_done"):
                # Set elements have no readable WRITETIME on Cassandra 4: stamp them a little
                # in the future so that a late duplicate mark (stamped with its op's time,
                # which is older) cannot land on top without a TTL.
                done_ts = marker_ts + MARK_MARGIN_US
                writes.append(
                    (f"{kind}_effects_done", (self._ttl, done_ts, set(r["effects_done"]), *tail))
                )
            _ok(c.run_all(writes))
            return
        # Housekeeping only: the row keeps no TTL (a leak, not a wrong state); say so.
        log.warning(
            "%s: could not give %s %s the retention TTL (kept changing)",
            self.config.redacted_url(),
            kind,
            key,
        )

    # --- runs -------------------------------------------------------------------------------
    def create_run(
        self, run: Run, *, start_nodes: Sequence[str], outbox: Sequence[OutboxMessage] = ()
    ) -> tuple[bool, Run]:
        """Create the run and its start nodes if no run with that id exists."""
        at, ts = self._now()
        op = uuid.uuid4().hex
        terminal = run.status in RUN_TERMINAL
        history = [self._event("run.created", None, {"blueprint": run.blueprint_id})]
        if terminal:
            history.append(self._event(f"run.{run.status}", None, {"error": run.error}))
        eff = Effects(
            at=at,
            ts=ts,
            history=tuple(history),
            outbox=self._stamp(outbox, at),
            start_nodes=tuple(start_nodes),
            index=IndexMove(status=run.status, bucket=bucket_of(at)),
        )
        params = (
            run.run_id,
            run.blueprint_id,
            run.version,
            _dumps(run.input),
            _dumps(run.snapshot),
            at,
            run.status,
            at,
            None if run.output is None else _dumps(run.output),
            run.error,
            run.fence,
            op,
            encode_effects(eff),
            self._ttl if terminal else 0,
        )
        for _ in range(MAX_CAS_ROUNDS):
            applied, row = self._lwt(
                "run_create",
                tuple(_u(p) for p in params),
                op,
                lambda: self._run_row(run.run_id, serial=True),
            )
            if applied:
                self._apply_run_effects(run.run_id, eff, op)
                return True, replace(run, created_at=at, updated_at=at)
            # Not applied: a redelivered start, or a cancel marker that came first.
            existing = row if row is not None and row.get("status") is not None else None
            if existing is None or "effects" not in existing:
                existing = self._run_row(run.run_id, serial=True)
            if existing is not None:
                break
            # A timed-out write that did not happen (nothing is stored): try again.
        else:
            raise StateError(f"run {run.run_id!r}: creation timed out {MAX_CAS_ROUNDS} times")
        stored = _run_from(existing)
        assert stored is not None
        self._repair_run(existing)
        return False, stored

    def get_run(self, run_id: str) -> Run | None:
        """Read one run (repairing its unapplied effects if they are old)."""
        row = self._run_row(run_id)
        if row is not None and _pending_effects(row) is not None:
            status_at = row.get("status_at") or 0.0
            if status_at < self._clock() - RUN_REPAIR_GRACE_S:
                self._repair_run(row)
        return _run_from(row)

    def set_run_status(self, run_id: str, *, from_: Collection[str], to: str) -> bool:
        """Move the run to ``to`` if its status is in ``from_``."""
        applied, _ = self._transition(run_id, from_=from_, to=to)
        return applied

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        output: Any = None,
        error: str | None = None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        """Move an active run to a terminal status once."""
        applied, _ = self._transition(
            run_id,
            from_=RUN_ACTIVE,
            to=status,
            output=None if output is None else _dumps(output),
            error=error,
            data={"error": error} if error else None,
            outbox=outbox,
        )
        return applied

    def cancel_run(
        self, run_id: str, *, reason: str, outbox: Sequence[OutboxMessage] = ()
    ) -> tuple[bool, Run | None]:
        """Cancel an active run and its active nodes, or leave a marker for a later start."""
        row = self._run_row(run_id)
        for _ in range(MAX_CAS_ROUNDS):
            if row is None:
                # A cancel that overtook its start: the marker makes the start a no-op. It
                # expires with the retention, like any finished run.
                at, ts = self._now()
                op = uuid.uuid4().hex
                eff = Effects(
                    at=at,
                    ts=ts,
                    history=(
                        self._event("run.cancelled", None, {"reason": reason, "marker": True}),
                    ),
                    index=IndexMove(status=RUN_CANCELLED, bucket=bucket_of(at)),
                )
                params = (
                    run_id,
                    "",
                    "",
                    "null",
                    "{}",
                    at,
                    RUN_CANCELLED,
                    at,
                    UNSET,
                    reason,
                    0,
                    op,
                    encode_effects(eff),
                    self._ttl,
                )
                applied, _ = self._lwt(
                    "run_create", params, op, lambda: self._run_row(run_id, serial=True)
                )
                if applied:
                    self._apply_run_effects(run_id, eff, op)
                    return True, None
                row = self._run_row(run_id, serial=True)
                continue
            if row["status"] not in RUN_ACTIVE:
                self._repair_run(row)
                return False, _run_from(row)
            applied, before = self._transition(
                run_id,
                from_=RUN_ACTIVE,
                to=RUN_CANCELLED,
                error=reason,
                data={"reason": reason},
                outbox=outbox,
                cancel_reason=reason,
                before=row,
            )
            if applied:
                return True, _run_from(before)
            row = self._run_row(run_id, serial=True)
        raise StateError(f"run {run_id!r}: cancel lost {MAX_CAS_ROUNDS} races")

    # --- nodes ------------------------------------------------------------------------------
    def get_node(self, run_id: str, node_id: str, iteration: int = 0) -> NodeState | None:
        """Read one node record (applying its unapplied effects first)."""
        return self.get_nodes(run_id, [node_id], iteration).get(node_id)

    def get_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0
    ) -> dict[str, NodeState]:
        """Read the existing records among ``node_ids``, one partition each, concurrently."""
        ids = list(dict.fromkeys(node_ids))
        out: dict[str, NodeState] = {}
        for _ in range(MAX_CAS_ROUNDS):
            results = _ok(self._c().run_all([("node_get", (run_id, n, iteration)) for n in ids]))
            rows = [r[0] for r in results if r and r[0].get("status") is not None]
            # Whoever sees a write whose effects are not applied applies them, then reads
            # again: no reader may act on a completion whose successors are not written yet.
            pending = [r for r in rows if _pending_effects(r) is not None]
            if not pending:
                out = {r["node_id"]: _node_from(r) for r in rows}
                break
            for row in pending:
                self._repair_node(row)
        else:
            raise StateError(f"run {run_id!r}: node effects kept changing while being read")
        return out

    def begin_attempt(
        self, run_id: str, node_id: str, iteration: int, attempt: int, *, takeover: bool = False
    ) -> NodeState | None:
        """Claim a pending node (or, with ``takeover``, a running one): compare-and-set.

        The condition is the status, attempts and deliveries just read, so of two
        concurrent duplicates only one claims a pending node; the other re-reads
        at SERIAL, finds it running and gets None.
        """
        key = (run_id, node_id, iteration)
        run, row = self._run_and_node(*key)
        for _ in range(MAX_CAS_ROUNDS):
            claimable = (NODE_PENDING, NODE_RUNNING) if takeover else (NODE_PENDING,)
            if row is None or row["status"] not in claimable:
                if row is not None:
                    self._repair_node(row, run, reread_run=False)
                return None
            self._repair_node(row, run, reread_run=False)
            stored = row.get("attempts") or 0
            att = max(attempt, stored, 1)
            deliveries = (row.get("deliveries") or 0) + 1 if att == stored else 1
            at, ts = self._now()
            op = uuid.uuid4().hex
            eff = Effects(
                at=at,
                ts=ts,
                iteration=iteration,
                history=(
                    self._event("node.started", node_id, {"attempt": att, "delivery": deliveries}),
                ),
                touch=True,
            )
            params = (
                self._ttl_for(run),
                att,
                deliveries,
                at,
                op,
                encode_effects(eff),
                *key,
                row["status"],
                row.get("attempts"),
                row.get("deliveries"),
            )
            applied, _ = self._lwt(
                "node_begin", params, op, lambda: self._node_row(*key, serial=True)
            )
            if applied:
                self._apply_node_effects(key, eff, op, run)
                return replace(
                    _node_from(row),
                    status=NODE_RUNNING,
                    attempts=att,
                    deliveries=deliveries,
                    updated_at=at,
                )
            row = self._node_row(*key, serial=True)
        raise StateError(f"run {run_id!r}: node {node_id!r} start lost {MAX_CAS_ROUNDS} races")

    def commit_node(self, completion: NodeCompletion) -> CommitResult:
        """Apply a node completion once; a duplicate re-applies the stored effects (the repair)."""
        cp = completion
        key = (cp.run_id, cp.node_id, cp.iteration)
        run, row = self._run_and_node(*key)
        run_status = run["status"] if run is not None else RUN_FAILED
        live = run_status in RUN_ACTIVE
        for _ in range(MAX_CAS_ROUNDS):
            if row is not None and row["status"] not in NODE_ACTIVE:
                self._repair_node(row, run, reread_run=False)
                return CommitResult(applied=False, node=_node_from(row), run_status=run_status)
            at, ts = self._now()
            op = uuid.uuid4().hex
            eff = Effects(
                at=at,
                ts=ts,
                iteration=cp.iteration,
                history=(self._event(f"node.{cp.status}", cp.node_id, {"action": cp.action}),),
            )
            if live:
                # Only a live run gets successors: a late node must not restart a finished run.
                eff = replace(
                    eff,
                    touch=True,
                    pending=tuple(cp.pending),
                    skipped=tuple(cp.skipped),
                    arrivals=tuple((a.join_id, a.predecessor, a.outcome) for a in cp.arrivals),
                    context=dict(cp.context_writes),
                    outbox=self._stamp(cp.outbox, at),
                )
            stored = row.get("attempts") if row is not None else None
            grow = stored is None or stored <= cp.attempt
            common = (
                self._ttl_for(run),
                cp.status,
                _dumps(cp.output),
                _u(cp.action),
                list(cp.edges_taken),
            )
            if grow:
                name = "node_complete_up"
                params: tuple[Any, ...] = (
                    *common,
                    cp.attempt,
                    at,
                    op,
                    encode_effects(eff),
                    *key,
                    cp.attempt,
                )
            else:
                name = "node_complete_keep"
                params = (*common, at, op, encode_effects(eff), *key, cp.attempt)
            applied, _ = self._lwt(name, params, op, lambda: self._node_row(*key, serial=True))
            if applied:
                self._apply_node_effects(key, eff, op, run)
                node = NodeState(
                    run_id=cp.run_id,
                    node_id=cp.node_id,
                    iteration=cp.iteration,
                    status=cp.status,
                    attempts=max(stored or 0, cp.attempt),
                    deliveries=(row.get("deliveries") or 0) if row is not None else 0,
                    output=cp.output,
                    action=cp.action,
                    edges_taken=tuple(cp.edges_taken),
                    error=None,
                    updated_at=at,
                )
                return CommitResult(applied=True, node=node, run_status=run_status)
            row = self._node_row(*key, serial=True)
            if row is None:
                raise StateError(
                    f"run {cp.run_id!r}: node {cp.node_id!r} has no record to complete"
                )
        raise StateError(
            f"run {cp.run_id!r}: node {cp.node_id!r} commit lost {MAX_CAS_ROUNDS} races"
        )

    def retry_node(
        self, run_id: str, node_id: str, iteration: int, *, attempt: int, error: str
    ) -> bool:
        """Put an active node back to pending after failed ``attempt``."""
        key = (run_id, node_id, iteration)
        run, row = self._run_and_node(*key)
        for _ in range(MAX_CAS_ROUNDS):
            if row is None or row["status"] not in NODE_ACTIVE:
                if row is not None:
                    self._repair_node(row, run, reread_run=False)
                return False
            at, ts = self._now()
            op = uuid.uuid4().hex
            eff = Effects(
                at=at,
                ts=ts,
                iteration=iteration,
                history=(self._event("node.retry", node_id, {"attempt": attempt, "error": error}),),
                touch=True,
            )
            enc = encode_effects(eff)
            ttl = self._ttl_for(run)
            params: tuple[Any, ...]
            if (row.get("attempts") or 0) <= attempt:
                name, params = "node_retry_up", (ttl, attempt, error, at, op, enc, *key, attempt)
            else:
                name, params = "node_retry_keep", (ttl, error, at, op, enc, *key, attempt)
            applied, _ = self._lwt(name, params, op, lambda: self._node_row(*key, serial=True))
            if applied:
                self._apply_node_effects(key, eff, op, run)
                return True
            row = self._node_row(*key, serial=True)
        raise StateError(f"run {run_id!r}: node {node_id!r} retry lost {MAX_CAS_ROUNDS} races")

    def fail_node(
        self,
        run_id: str,
        node_id: str,
        iteration: int,
        *,
        error: str,
        fallback: str | None = None,
        fail_run: bool = True,
        outbox: Sequence[OutboxMessage] = (),
        skipped: Sequence[str] = (),
        arrivals: Sequence[Arrival] = (),
    ) -> bool:
        """Fail an active node for good; start its fallback, fail the run, or arrive at joins."""
        key = (run_id, node_id, iteration)
        run, row = self._run_and_node(*key)
        if row is not None and row["status"] not in NODE_ACTIVE:
            # Already settled: a redelivery. Finish what the first failure started (the repair).
            self._repair_node(row)
            return False
        at, ts = self._now()
        op = uuid.uuid4().hex
        eff = Effects(
            at=at,
            ts=ts,
            iteration=iteration,
            history=(self._event("node.failed", node_id, {"error": error, "fallback": fallback}),),
            fallback=fallback,
            fail_run=FailRun(error=error, outbox=self._stamp(outbox, at))
            if fail_run and fallback is None
            else None,
        )
        if fallback is None and not fail_run:
            # A failure a join tolerates: its skips and arrivals, as a completion would write.
            eff = replace(
                eff,
                touch=True,
                skipped=tuple(skipped),
                arrivals=tuple((a.join_id, a.predecessor, a.outcome) for a in arrivals),
            )
        params = (self._ttl_for(run), error, at, op, encode_effects(eff), *key)
        for _ in range(MAX_CAS_ROUNDS):
            applied, _ = self._lwt(
                "node_fail", params, op, lambda: self._node_row(*key, serial=True)
            )
            if applied:
                self._apply_node_effects(key, eff, op, run)
                return True
            row = self._node_row(*key, serial=True)
            if row is None or row["status"] not in NODE_ACTIVE:
                if row is not None:
                    self._repair_node(row)
                return False
            # Still active: the conditional write timed out without being applied.
        raise StateError(
            f"run {run_id!r}: node {node_id!r} failure timed out {MAX_CAS_ROUNDS} times"
        )

    def cancel_nodes(
        self, run_id: str, node_ids: Sequence[str], iteration: int = 0, *, reason: str
    ) -> list[str]:
        """Cancel the active ones among ``node_ids`` (each conditionally); returns them."""
        run = self._run_row(run_id)
        ttl = self._ttl_for(run)
        cancelled: list[str] = []
        for node_id in dict.fromkeys(node_ids):
            key = (run_id, node_id, iteration)
            for _ in range(MAX_CAS_ROUNDS):
                at, ts = self._now()
                op = uuid.uuid4().hex
                eff = Effects(
                    at=at,
                    ts=ts,
                    iteration=iteration,
                    history=(self._event("node.cancelled", node_id, {"reason": reason}),),
                )
                params = (ttl, reason, at, op, encode_effects(eff), *key)
                reread = functools.partial(self._node_row, *key, serial=True)
                applied, _ = self._lwt("node_cancel", params, op, reread)
                if applied:
                    self._apply_node_effects(key, eff, op, run)
                    cancelled.append(node_id)
                    break
                row = reread()
                if row is None or row["status"] not in NODE_ACTIVE:
                    break
                # Still active: a timed-out write that did not happen; try again.
            else:
                raise StateError(f"run {run_id!r}: cancelling {node_id!r} timed out")
        return cancelled

    def fire_join(self, run_id: str, join_id: str, iteration: int = 0) -> bool:
        """Create the join's pending record once (``INSERT ... IF NOT EXISTS``)."""
        run = self._run_row(run_id)
        at, ts = self._now()
        op = uuid.uuid4().hex
        eff = Effects(
            at=at,
            ts=ts,
            iteration=iteration,
            history=(self._event("join.fired", join_id, None),),
            touch=True,
        )
        ttl = self._ttl_for(run)
        c = self._c()
        c.execute("dir_put", (run_id, iteration, join_id, at, ttl, ts))
        for _ in range(MAX_CAS_ROUNDS):
            applied, row = self._lwt(
                "node_create",
                (run_id, join_id, iteration, NODE_PENDING, at, op, encode_effects(eff), ttl),
                op,
                lambda: self._node_row(run_id, join_id, iteration, serial=True),
            )
            if applied:
                self._apply_node_effects((run_id, join_id, iteration), eff, op, run)
                return True
            if row is None or row.get("status") is None or "effects" not in row:
                row = self._node_row(run_id, join_id, iteration, serial=True)
            if row is not None:
                # Another caller fired it (or the join was skipped): finish its effects.
                self._repair_node(row, run, reread_run=False)
                return False
            # A timed-out write that did not happen: nobody fired yet, try again.
        raise StateError(
            f"run {run_id!r}: firing join {join_id!r} timed out {MAX_CAS_ROUNDS} times"
        )

    def get_arrivals(self, run_id: str, join_id: str, iteration: int = 0) -> dict[str, str]:
        """Read a join's arrival set (one partition)."""
        rows = self._c().execute("arrival_get", (run_id, join_id, iteration))
        return {r["predecessor"]: r["outcome"] for r in rows}

    # --- context and history --------------------------------------------------------------
    def get_context(self, run_id: str) -> dict[str, Any]:
        """Read the run context (one partition, one row per key)."""
        rows = self._c().execute("context_get", (run_id,))
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def append_history(
        self, run_id: str, kind: str, *, node_id: str | None = None, data: Any = None
    ) -> None:
        """Append one history event (with the run's TTL if it has finished)."""
        run = self._run_row(run_id)
        at, ts = self._now()
        item = HistoryItem(event_id=str(timeuuid(ts)), kind=kind, node_id=node_id, data=data)
        _ok(self._c().run_all(self._history_writes(run_id, [item], at, self._ttl_for(run), ts)))

    def get_history(self, run_id: str) -> list[HistoryEvent]:
        """Read the history in commit order (clustered by a time-based id)."""
        rows = self._c().execute("history_get", (run_id,))
        return [
            HistoryEvent(
                run_id=run_id,
                seq=i,
                at=r["at"],
                kind=r["kind"],
                node_id=r["node_id"],
                data=_loads(r["data"]),
            )
            for i, r in enumerate(rows, start=1)
        ]

    # --- the status index -----------------------------------------------------------------
    def _buckets(self, status: str, first: int, last: int) -> list[int]:
        """Non-empty buckets of ``status`` in [first, last], oldest first (day partitions)."""
        days = list(range(first // BUCKETS_PER_DAY, last // BUCKETS_PER_DAY + 1))
        results = _ok(self._c().run_all([("buckets_get", (status, d)) for d in days]))
        return sorted(
            {r["bucket"] for rows in results for r in rows if first <= r["bucket"] <= last}
        )

    def _hints(self, status: str, bucket: int) -> list[str]:
        """Run ids hinted in one (status, bucket): its shards, concurrently."""
        results = _ok(
            self._c().run_all([("index_get", (status, bucket, s)) for s in range(INDEX_SHARDS)])
        )
        ids = [r["run_id"] for rows in results for r in rows]
        if not ids and bucket < bucket_of(self._clock()) - 2:
            # Empty and no longer written (writers use the current bucket): forget it.
            day = bucket // BUCKETS_PER_DAY
            self._c().execute("buckets_del", (self._now()[1], status, day, bucket))
        return ids

    def _checked(self, status: str, bucket: int, ids: list[str]) -> list[Row]:
        """The runs whose row confirms the hint; stale old hints are deleted."""
        results = _ok(self._c().run_all([("run_get", (i,)) for i in ids]))
        old = bucket < bucket_of(self._clock()) - 2
        out: list[Row] = []
        stale: list[tuple[str, tuple[Any, ...]]] = []
        for run_id, rows in zip(ids, results, strict=True):
            row = rows[0] if rows and rows[0].get("status") is not None else None
            moved = row is not None and row.get("bucket") not in (None, bucket)
            if row is None or row["status"] != status or moved:
                if old:
                    stale.append(
                        (
                            "index_del",
                            (
                                self._now()[1],
                                status,
                                bucket,
                                shard_of(run_id, INDEX_SHARDS),
                                run_id,
                            ),
                        )
                    )
                continue
            out.append(row)
        _ok(self._c().run_all(stale))
        return out

    def find_stalled(self, *, status: str, older_than: float, limit: int = 100) -> list[str]:
        """Run ids in ``status`` without progress since ``older_than`` (bounded index reads)."""
        first = bucket_of(self._clock() - self.index_lookback_s)
        out: list[str] = []
        for bucket in self._buckets(status, first, bucket_of(older_than)):
            for row in self._checked(status, bucket, self._hints(status, bucket)):
                updated = max(row.get("status_at") or 0.0, row.get("progress_at") or 0.0)
                if updated < older_than and row["run_id"] not in out:
                    out.append(row["run_id"])
                    if len(out) >= limit:
                        return out
        return out

    def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[Run]:
        """Recent runs newest first, through the status index (at most ``index_lookback_s``)."""
        if limit <= 0:
            return []
        statuses = RUN_STATUSES if status is None else (status,)
        now_b = bucket_of(self._clock())
        first = bucket_of(self._clock() - self.index_lookback_s)
        found: dict[str, tuple[int, Row]] = {}
        day = now_b // BUCKETS_PER_DAY
        while day >= first // BUCKETS_PER_DAY:
            # One day at a time, newest first: usually the first day has enough.
            lo, hi = max(first, day * BUCKETS_PER_DAY), min(now_b, (day + 1) * BUCKETS_PER_DAY - 1)
            by_bucket: dict[int, list[str]] = {}
            for st in statuses:
                for b in self._buckets(st, lo, hi):
                    by_bucket.setdefault(b, []).append(st)
            for bucket in sorted(by_bucket, reverse=True):
                for st in by_bucket[bucket]:
                    for row in self._checked(st, bucket, self._hints(st, bucket)):
                        found.setdefault(row["run_id"], (bucket, row))
                # Only after the whole bucket: its runs of every status are equally recent.
                if self._listed_enough(found, status, limit, bucket):
                    return self._listed(found, status, limit)
            day -= 1
        return self._listed(found, status, limit)

    @staticmethod
    def _listed_enough(
        found: dict[str, tuple[int, Row]], status: str | None, limit: int, bucket: int
    ) -> bool:
        if len(found) < limit:
            return False
        if status is not None:
            return True  # ordered by bucket: older buckets can only come after
        # Ordered by creation: a run in an older bucket was created before that bucket began.
        created = sorted((r.get("created_at") or 0.0 for _, r in found.values()), reverse=True)
        return created[limit - 1] >= bucket * STATUS_BUCKET_S

    @staticmethod
    def _listed(found: dict[str, tuple[int, Row]], status: str | None, limit: int) -> list[Run]:
        rows = list(found.values())
        if status is None:
            rows.sort(key=lambda br: br[1].get("created_at") or 0.0, reverse=True)
        else:
            rows.sort(
                key=lambda br: (
                    br[0],
                    max(br[1].get("status_at") or 0.0, br[1].get("progress_at") or 0.0),
                ),
                reverse=True,
            )
        return [r for _, row in rows[:limit] if (r := _run_from(row)) is not None]

    def purge_expired(self, *, limit: int = 1000) -> int:
        """Nothing to do: finished runs expire by TTL (see docs/state.md for the tombstones)."""
        return 0

    # --- outbox -----------------------------------------------------------------------------
    def _cursors(self) -> dict[int, float]:
        c = self._c()
        if self._outbox_origin is None:
            rows = c.execute("version_get", ())
            if not rows:
                raise SchemaError(
                    f"Scylla store {self.config.redacted_url()} has no schema: "
                    "run `flowbridge migrate`"
                )
            self._outbox_origin = float(rows[0]["created_at"] or 0.0) - OUTBOX_SETTLE_S
        lows = {s: self._outbox_origin for s in range(OUTBOX_SHARDS)}
        for r in c.execute("cursor_get", ()):
            if r["shard"] in lows and r["low"] is not None:
                lows[r["shard"]] = max(lows[r["shard"]], r["low"])
        return lows

    def _read_outbox(
        self, shards: Iterable[int], lows: Mapping[int, float], limit: int
    ) -> dict[int, list[Row]]:
        """Each shard's rows from its cursor on, oldest first (one partition per hour)."""
        now_h = int(self._clock() // OUTBOX_PARTITION_S)
        queries: list[tuple[int, tuple[Any, ...]]] = [
            (s, (h, s, lows[s], limit))
            for s in shards
            for h in range(int(lows[s] // OUTBOX_PARTITION_S), now_h + 1)
        ]
        results = _ok(self._c().run_all([("outbox_get", q) for _, q in queries]))
        per: dict[int, list[Row]] = {}
        for (shard, q), rows in zip(queries, results, strict=True):
            for r in rows:
                r["hour"] = q[0]
            per.setdefault(shard, []).extend(rows)
        return per

    def pending_outbox(self, *, limit: int = 500) -> list[OutboxMessage]:
        """Unpublished outbox rows, oldest first; moves each shard's cursor past published ones."""
        lows = self._cursors()
        per = self._read_outbox(range(OUTBOX_SHARDS), lows, limit)
        now = self._clock()
        rows: list[Row] = []
        moves: list[tuple[str, tuple[Any, ...]]] = []
        for shard in range(OUTBOX_SHARDS):
            shard_rows = per.get(shard, [])[:limit]
            rows += shard_rows
            # Everything older than the oldest pending row (or the settle window) is published.
            low = min([r["created_at"] for r in shard_rows] + [now - OUTBOX_SETTLE_S])
            if low > lows[shard] + 1.0:
                moves.append(("cursor_set", (low, shard)))
        _ok(self._c().run_all(moves))
        rows.sort(key=lambda r: (r["created_at"], r["id"]))
        out: list[OutboxMessage] = []
        seen: set[str] = set()
        for r in rows:
            self._outbox_locs.setdefault(r["id"], set()).add((r["hour"], r["created_at"]))
            if r["id"] in seen or len(out) >= limit:
                continue
            seen.add(r["id"])
            out.append(
                OutboxMessage(
                    id=r["id"],
                    topic=r["topic"],
                    key=r["key"],
                    value=json.loads(r["value"]),
                    created_at=r["created_at"],
                )
            )
        if len(self._outbox_locs) > 100_000:
            self._outbox_locs = {}
        return out

    def delete_outbox(self, ids: Sequence[str]) -> None:
        """Forget published outbox rows (by the locations ``pending_outbox`` saw, else a lookup)."""
        if not ids:
            return
        missing = [i for i in ids if i not in self._outbox_locs]
        if missing:
            shards = {shard_of(i, OUTBOX_SHARDS) for i in missing}
            per = self._read_outbox(shards, self._cursors(), 10_000)
            wanted = set(missing)
            for rows in per.values():
                for r in rows:
                    if r["id"] in wanted:
                        self._outbox_locs.setdefault(r["id"], set()).add(
                            (r["hour"], r["created_at"])
                        )
        deletes = [
            ("outbox_del", (hour, shard_of(i, OUTBOX_SHARDS), created, i))
            for i in dict.fromkeys(ids)
            for hour, created in self._outbox_locs.pop(i, set())
        ]
        _ok(self._c().run_all(deletes))
