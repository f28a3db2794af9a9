"""Fixtures of the state-store contract suite: one ``store`` fixture on every backend.

The ``spec`` parameter is ``sqlite``, ``memory`` or ``scylla``; each store is
opened by its URL through the backend registry, as the processes open theirs.
SQLite runs on a real file in the test's tmp_path, memory on a database of
its own. The Scylla half runs on a real CQL server (``cql_hosts`` in
tests/conftest.py): the cluster in ``SCYLLA_HOSTS`` (``host[:port],...``;
optional ``SCYLLA_DC``, ``SCYLLA_USERNAME``, ``SCYLLA_PASSWORD``), else the
Apache Cassandra in ``../shared/cassandra``, started once per session. The
session gets a fresh keyspace ``flowbridge_test_<hex>``, dropped at the end.
Without either, the half is skipped with the reason, except under ``CI=true``,
where it fails. It never runs against a mock of the driver.

Tests marked ``several_processes`` open the store in other processes; a
``memory://`` database lives in one process, so they are not generated for it
(the session summary says which, and why).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from state import open_store
from state.protocol import StateStore

#: Every backend the suite runs on.
BACKENDS = ("sqlite", "memory", "scylla")


@dataclass(frozen=True)
class StoreSpec:
    """How to open the store under test again, in this process or another (picklable)."""

    backend: str
    #: The store's URL (what ``FLOWBRIDGE_STATE_URL`` would say).
    url: str
    #: Whether stores in other processes see the same data (``memory://`` does not).
    processes: bool = True
    #: Whether finished runs expire by a TTL of whole seconds (``purge_expired`` has nothing to do).
    ttl_expiry: bool = False

    def open(self, **options: Any) -> StateStore:
        """A new store object on the same data (``options``: ``retention_s``, ``clock``)."""
        return open_store(self.url, env=os.environ, **options)

    def fresh(self) -> StoreSpec:
        """The same backend on other, empty data without a schema."""
        tag = uuid.uuid4().hex[:8]
        if self.backend == "sqlite":
            return replace(self, url=f"{self.url.rpartition('/')[0]}/fresh-{tag}.db")
        if self.backend == "memory":
            return replace(self, url=f"memory://fresh-{tag}")
        head, _, _ = self.url.rpartition("/")
        return replace(self, url=f"{head}/flowbridge_fresh_{tag}")

    def discard(self, store: StateStore) -> None:
        """Drop the data ``store`` holds (a fresh keyspace, a memory database)."""
        if self.backend == "scylla":
            store._c().ddl(f"DROP KEYSPACE IF EXISTS {store.config.keyspace}")  # type: ignore[attr-defined]
        elif self.backend == "memory":
            from state.memory import drop

            drop(store.name)  # type: ignore[attr-defined]

    def schema_version(self, store: StateStore) -> int:
        """The schema version the store's data records."""
        if self.backend == "sqlite":
            import sqlite3

            with sqlite3.connect(store.path) as db:  # type: ignore[attr-defined]
                return int(db.execute("SELECT version FROM schema_version").fetchone()[0])
        if self.backend == "memory":
            return int(store._db.version)  # type: ignore[attr-defined]
        return int(store._c().execute("version_get", (), serial=True)[0]["version"])  # type: ignore[attr-defined]

    def set_schema_version(self, store: StateStore, version: int) -> None:
        """Record another schema version in the store's data (as an older or newer release)."""
        if self.backend == "sqlite":
            import sqlite3

            with sqlite3.connect(store.path) as db:  # type: ignore[attr-defined]
                db.execute("UPDATE schema_version SET version = ?", (version,))
        elif self.backend == "memory":
            store._db.version = version  # type: ignore[attr-defined]
        else:
            current = self.schema_version(store)
            store._c().execute("version_set", (version, current))  # type: ignore[attr-defined]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test on every backend that can do what it needs."""
    if "spec" not in metafunc.fixturenames:
        return
    backends = list(BACKENDS)
    if metafunc.definition.get_closest_marker("several_processes") is not None:
        backends = [b for b in backends if b != "memory"]
        _single_process_only.append(metafunc.definition.nodeid)
    metafunc.parametrize("spec", backends, indirect=True)


#: Tests not generated for ``memory://`` (reported at the end of the session).
_single_process_only: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which tests do not run on the memory store, and why."""
    if _single_process_only:
        terminalreporter.write_line(
            f"contract: {len(_single_process_only)} tests open the store in several processes "
            "and do not run on memory:// (its data lives in one process): "
            + ", ".join(n.rpartition("::")[2] for n in _single_process_only)
        )


@pytest.fixture(scope="session")
def scylla_url(cql_hosts: str) -> Iterator[str]:
    """A fresh, migrated keyspace on the real CQL server for the session, dropped at the end."""
    from tests.conftest import fresh_keyspace

    url, drop = fresh_keyspace(cql_hosts, f"test_{uuid.uuid4().hex[:12]}")
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreSpec]:
    """Which backend this test runs on, and where its data is."""
    if request.param == "sqlite":
        yield StoreSpec("sqlite", url=f"sqlite:///{tmp_path / 'state.db'}")
    elif request.param == "memory":
        name = f"contract-{uuid.uuid4().hex[:12]}"
        yield StoreSpec("memory", url=f"memory://{name}", processes=False)
        from state.memory import drop

        drop(name)
    else:
        url = request.getfixturevalue("scylla_url")
        yield StoreSpec("scylla", url=url, ttl_expiry=True)


@pytest.fixture
def make_store(spec: StoreSpec) -> Iterator[Callable[..., StateStore]]:
    """Open (and migrate) stores on the test's data; all are closed after the test."""
    opened: list[StateStore] = []

    def make(**options: Any) -> StateStore:
        store = spec.open(**options)
        if store.auto_migrate:
            store.migrate()  # Scylla: the session fixture migrated the keyspace once
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., StateStore]) -> StateStore:
    """The store under test, with default options."""
    return make_store()
