"""Fixtures of the state-store contract suite: one ``store`` fixture, params ``sqlite`` and ``scylla``.

SQLite runs always, on a real file in the test's tmp_path. The Scylla half
runs on a real CQL server (``cql_hosts`` in tests/conftest.py): the cluster in
``SCYLLA_HOSTS`` (``host[:port],...``; optional ``SCYLLA_DC``,
``SCYLLA_USERNAME``, ``SCYLLA_PASSWORD``), else the Apache Cassandra in
``../shared/cassandra``, started once per session. The session gets a fresh
keyspace ``flowbridge_test_<hex>``, dropped at the end. Without either, the
half is skipped with the reason, except under ``CI=true``, where it fails. It
never runs against a mock of the driver.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from state.protocol import StateStore


@dataclass(frozen=True)
class StoreSpec:
    """How to open the store under test again, in this process or another (picklable)."""

    backend: str
    #: SQLite: the database file.
    path: str | None = None
    #: Scylla: the parsed configuration (``state.scylla.ScyllaConfig``).
    config: Any = None

    def open(self, **options: Any) -> StateStore:
        """A new store object on the same data (``options``: constructor keywords)."""
        if self.backend == "sqlite":
            from state.sqlite import SQLiteStore

            assert self.path is not None
            return SQLiteStore(self.path, **options)
        from state.scylla import ScyllaStore

        return ScyllaStore(self.config, **options)


@pytest.fixture(scope="session")
def scylla_config(cql_hosts: str) -> Iterator[Any]:
    """A fresh, migrated keyspace on the real CQL server for the session, dropped at the end."""
    import os

    from state.scylla import parse_scylla_url
    from tests.conftest import fresh_keyspace

    url, drop = fresh_keyspace(cql_hosts, f"test_{uuid.uuid4().hex[:12]}")
    try:
        yield parse_scylla_url(url, env=os.environ)
    finally:
        drop()


@pytest.fixture(params=["sqlite", "scylla"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    """Which backend this test runs on, and where its data is."""
    if request.param == "sqlite":
        return StoreSpec("sqlite", path=str(tmp_path / "state.db"))
    return StoreSpec("scylla", config=request.getfixturevalue("scylla_config"))


@pytest.fixture
def make_store(spec: StoreSpec) -> Iterator[Callable[..., StateStore]]:
    """Open (and migrate) stores on the test's data; all are closed after the test."""
    opened: list[StateStore] = []

    def make(**options: Any) -> StateStore:
        store = spec.open(**options)
        if spec.backend == "sqlite":
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
