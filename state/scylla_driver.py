"""One process's scylla-driver connection: Cluster and Session, TLS and auth, statements.

The driver is imported on first connection, never at module import. A ``_Conn``
belongs to the process that made it: the store makes a new one after a fork
(``ScyllaCore._c``), because a driver's threads do not survive a fork.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from state.errors import ConfigError, SchemaError, StateError
from state.scylla_config import ScyllaConfig
from state.scylla_schema import STATEMENTS

__all__ = ["CONCURRENCY", "UNSET", "Row"]

Row = dict[str, Any]

#: Statements in flight at once when a read or write fans out.
CONCURRENCY: Final = 64


class _Unset:
    """Marker for "leave this column alone" (bound as the driver's UNSET_VALUE, no tombstone)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


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

    def lwt(
        self,
        name: str,
        params: Sequence[Any],
        op: str | None,
        reread: Callable[[], Row | None] | None,
    ) -> tuple[bool, Row | None]:
        """Run one conditional write: (applied, the LWT's result row or the SERIAL re-read)."""
        result = self.run_all([(name, params)])[0]
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
