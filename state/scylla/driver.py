"""One process's scylla-driver connection: Cluster and Session, TLS and auth, statements.

The driver is imported on first connection, never at module import. A ``_Conn``
belongs to the process that made it: the store makes a new one after a fork
(``Session.conn``), because a driver's threads do not survive a fork.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from state.errors import ConfigError, SchemaError, StateError
from state.scylla.config import ScyllaConfig
from state.scylla.schema import STATEMENTS

__all__ = ["BATCH", "CONCURRENCY", "UNSET", "Row", "StatementCounts", "statement_kind"]

Row = dict[str, Any]

#: Statements in flight at once when a read or write fans out.
CONCURRENCY: Final = 64
#: The name of a ``run_all`` item that is an unlogged batch: its parameters are its statements.
BATCH: Final = "batch"
#: How long ``migrate`` waits for every node to report the new schema.
SCHEMA_AGREEMENT_WAIT_S: Final = 60.0


class _Unset:
    """Marker for "leave this column alone" (bound as the driver's UNSET_VALUE, no tombstone)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


#: What a statement is to the cluster: a read, a plain write, or a conditional write (Paxos).
Kind = Literal["read", "write", "lwt"]


@functools.cache
def statement_kind(name: str) -> Kind:
    """Whether the prepared statement ``name`` reads, writes plainly, or writes conditionally."""
    cql = STATEMENTS[name]
    if cql.lstrip().upper().startswith("SELECT"):
        return "read"
    return "lwt" if " IF " in cql else "write"


@dataclass
class StatementCounts:
    """What one connection sent while counting: statements by kind and name, and round trips.

    A round trip is one request the client waits for: one statement, one batch, or
    one group of statements sent concurrently (``run_all``), since the group's
    latency is about that of its slowest member. An LWT is one round trip here,
    although the coordinator runs Paxos (about four replica round trips) for it.
    """

    reads: int = 0
    writes: int = 0
    lwts: int = 0
    #: Batches sent (their statements are counted by kind too).
    batches: int = 0
    round_trips: int = 0
    by_statement: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, names: Sequence[str], *, batches: int = 0) -> None:
        """Count one round trip carrying the statements ``names`` (``batches`` of them batched)."""
        with self._lock:
            self.round_trips += 1
            self.batches += batches
            for name in names:
                kind = statement_kind(name)
                if kind == "read":
                    self.reads += 1
                elif kind == "write":
                    self.writes += 1
                else:
                    self.lwts += 1
                self.by_statement[name] += 1

    def snapshot(self) -> dict[str, int]:
        """The totals as a plain dict (for tables and JSON)."""
        with self._lock:
            return {
                "lwts": self.lwts,
                "writes": self.writes,
                "reads": self.reads,
                "batches": self.batches,
                "round_trips": self.round_trips,
            }


class _Ambiguous(Exception):
    """A conditional write timed out: it may or may not have been applied."""


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
            **_contact_points(config.hosts),
            "execution_profiles": {EXEC_PROFILE_DEFAULT: profile(cl), "serial": profile(serial)},
            "connect_timeout": config.connect_timeout_s,
            "control_connection_timeout": config.connect_timeout_s,
            # The driver's own wait after each DDL (through the control connection).
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
        #: Set while someone counts (``Session.counting``); None costs one test per request.
        self.counts: StatementCounts | None = None

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
        """Bind ``params`` to the prepared statement ``name`` (UNSET leaves a column alone).

        A ``BATCH`` item becomes one unlogged batch of its statements (``params``).
        """
        if name == BATCH:
            from cassandra.query import BatchStatement, BatchType

            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for inner, values in params:
                batch.add(self.bind(inner, values))
            return batch
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
        counts = self.counts
        for start in range(0, len(items), CONCURRENCY):
            chunk = items[start : start + CONCURRENCY]
            if counts is not None:
                names = [
                    n for name, p in chunk for n in ([i for i, _ in p] if name == BATCH else [name])
                ]
                counts.add(names, batches=sum(name == BATCH for name, _ in chunk))
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

    def lwt(
        self,
        name: str,
        params: Sequence[Any],
        op: str | None,
        reread: Callable[[], Row | None] | None,
    ) -> tuple[bool, Row | None]:
        """Run one conditional write: (applied, the LWT's result row or the SERIAL re-read)."""
        return self.settle(self.run_all([(name, params)])[0], op, reread)

    @staticmethod
    def settle(
        result: list[Row] | Exception, op: str | None, reread: Callable[[], Row | None] | None
    ) -> tuple[bool, Row | None]:
        """A conditional write's ``run_all`` result as (applied, its result row or the re-read)."""
        if isinstance(result, _Ambiguous):
            if reread is None:
                raise StateError(f"a conditional write timed out: {result}; retry")
            row = reread()
            return row is not None and op is not None and row.get("lwt_op") == op, row
        if isinstance(result, Exception):
            raise result
        row = result[0] if result else {}
        return bool(row.get("[applied]")), row

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

    def wait_for_schema_agreement(self, wait_s: float = SCHEMA_AGREEMENT_WAIT_S) -> None:
        """Wait until every node that is up reports the same schema version.

        Each host is asked for its own ``system.local.schema_version``. The
        driver's ``Session.wait_for_schema_agreement`` reads that column as an
        attribute through the default execution profile, whose rows are dicts
        here, so it never sees a version; the control connection's method is
        deprecated (it warns).
        """
        from cassandra.query import SimpleStatement

        query = SimpleStatement("SELECT schema_version FROM system.local WHERE key = 'local'")
        deadline = time.monotonic() + wait_s
        versions: dict[str, Any] = {}
        while True:
            versions = {}
            for host in self.cluster.metadata.all_hosts():
                if host.is_up is False:
                    continue  # a node that is down cannot disagree; it syncs when it comes back
                try:
                    rows = list(self.session.execute(query, host=host, timeout=10))
                except Exception as exc:  # driver errors have no common base worth naming
                    versions[str(host.endpoint)] = f"unreachable ({type(exc).__name__})"
                    continue
                versions[str(host.endpoint)] = rows[0].get("schema_version") if rows else None
            agreed = set(versions.values())
            if len(agreed) == 1 and None not in agreed and not _is_error(next(iter(agreed))):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        seen = ", ".join(f"{h}: {v}" for h, v in sorted(versions.items())) or "no host is up"
        raise SchemaError(
            f"Scylla store {self.config.redacted_url()}: nodes did not agree on the schema "
            f"within {wait_s:g} s ({seen}); check that all nodes are up, then run "
            "`flowbridge migrate` again"
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


def _is_error(version: Any) -> bool:
    return isinstance(version, str) and version.startswith("unreachable")


def _contact_points(hosts: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """``Cluster`` keywords that make the session dial each host on its own port.

    The driver builds the hosts it pools from ``system.local``/``system.peers``
    with ``Cluster.port`` (Cassandra 4 and Scylla do not report the native
    port there), not with the contact point's port: a single node on a
    non-default port would get a control connection and then no pool
    (``NoHostAvailable``). Hosts on different ports need an endpoint factory
    that knows each one's port.
    """
    from cassandra.connection import DefaultEndPoint, DefaultEndPointFactory

    ports = [p for _, p in hosts]
    common = max(set(ports), key=ports.count)
    kwargs: dict[str, Any] = {
        "contact_points": [DefaultEndPoint(h, p) for h, p in hosts],
        "port": common,
    }
    if len(set(ports)) > 1:
        by_address = {}
        for host, port in hosts:
            by_address[host] = port
            for addr in _addresses(host):
                by_address.setdefault(addr, port)

        class _PortMap(DefaultEndPointFactory):  # type: ignore[misc]
            def create(self, row: Any) -> Any:
                ep = super().create(row)
                port = by_address.get(ep.address)
                return ep if port is None or port == ep.port else DefaultEndPoint(ep.address, port)

        kwargs["endpoint_factory"] = _PortMap(port=common)
    return kwargs


def _addresses(host: str) -> set[str]:
    import socket

    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


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
