"""Choosing and opening a state store from ``FLOWBRIDGE_STATE_URL`` (or ``SCYLLA_HOSTS``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from state.errors import ConfigError
from state.protocol import StateStore

__all__ = ["DEFAULT_STATE_URL", "open_store", "state_url_from_env"]

#: A file in the working directory: the embedded default for one host.
DEFAULT_STATE_URL = "sqlite:///flowbridge.db"


def state_url_from_env(env: Mapping[str, str]) -> str:
    """The state URL: ``FLOWBRIDGE_STATE_URL`` wins over ``SCYLLA_HOSTS``/``SCYLLA_KEYSPACE``."""
    url = env.get("FLOWBRIDGE_STATE_URL", "").strip()
    if url:
        return url
    hosts = env.get("SCYLLA_HOSTS", "").strip()
    if hosts:
        keyspace = env.get("SCYLLA_KEYSPACE", "flowbridge").strip() or "flowbridge"
        return f"scylla://{hosts}/{keyspace}"
    return DEFAULT_STATE_URL


def sqlite_path(url: str) -> Path:
    """Map a SQLAlchemy-style SQLite URL to a path (``sqlite:///rel.db``, ``sqlite:////abs.db``)."""
    if not url.startswith("sqlite:///"):
        raise ConfigError(
            f"FLOWBRIDGE_STATE_URL={url!r}: a SQLite URL looks like sqlite:///relative.db "
            "or sqlite:////absolute/path.db"
        )
    rest = url[len("sqlite:///") :]
    if not rest:
        raise ConfigError(f"FLOWBRIDGE_STATE_URL={url!r} names no file")
    return Path(rest)


def open_store(
    url: str,
    *,
    env: Mapping[str, str] | None = None,
    retention_s: float | None = None,
    clock: Callable[[], float] | None = None,
) -> StateStore:
    """Open (lazily: no connection yet) the store that ``url`` names."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        if env is not None and env.get("DYNO"):
            # A PaaS dyno has an ephemeral disk of its own: each process would see another file.
            raise ConfigError(
                "FLOWBRIDGE_STATE_URL is SQLite but DYNO is set: SQLite works on one host only; "
                "set FLOWBRIDGE_STATE_URL=scylla://... (or SCYLLA_HOSTS) on a PaaS"
            )
        from state.sqlite import SQLiteStore

        options: dict[str, Any] = {}
        if retention_s is not None:
            options["retention_s"] = retention_s
        if clock is not None:
            options["clock"] = clock
        return SQLiteStore(sqlite_path(url), **options)
    if scheme in ("scylla", "cassandra"):
        from state.scylla import ScyllaStore  # type: ignore[import-not-found,unused-ignore]

        store: StateStore = ScyllaStore.from_url(url, env=env or {}, retention_s=retention_s)
        return store
    raise ConfigError(
        f"FLOWBRIDGE_STATE_URL={url!r}: unknown scheme {scheme!r} (use sqlite:/// or scylla://)"
    )
