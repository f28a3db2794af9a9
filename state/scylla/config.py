"""Where the Scylla cluster is and how to talk to it: URL parsing, options, password masking.

Pure code: nothing here imports the driver or connects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote

from state.constants import DEFAULT_RETENTION_S
from state.errors import ConfigError

__all__ = [
    "DEFAULT_KEYSPACE",
    "DEFAULT_PORT",
    "ScyllaConfig",
    "format_replication",
    "parse_replication",
    "parse_scylla_url",
]

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
