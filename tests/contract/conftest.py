"""Fixtures of the state-store contract suite: one ``store`` fixture, params ``sqlite`` and ``scylla``.

SQLite runs always, on a real file in the test's tmp_path. Scylla/Cassandra runs
when ``SCYLLA_HOSTS`` names a CQL endpoint (``host[:port],...``; optional
``SCYLLA_DC``, ``SCYLLA_USERNAME``, ``SCYLLA_PASSWORD``): the session gets a
fresh keyspace ``flowbridge_test_<hex>``, dropped at the end. No CQL server can
run on our CI machines, so without ``SCYLLA_HOSTS`` the Scylla half is skipped
with a message saying so -- also under ``CI=true`` -- and never run against a
mock of the driver.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from state.protocol import StateStore

SCYLLA_SKIP = (
    "SCYLLA_HOSTS is not set: no CQL server on this machine; see docs/state.md to run the "
    "Scylla half"
)


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
def scylla_config() -> Iterator[Any]:
    """A fresh keyspace on the cluster in ``SCYLLA_HOSTS`` for the session, dropped at the end."""
    hosts = os.environ.get("SCYLLA_HOSTS", "").strip()
    if not hosts:
        # Deliberately a skip even under CI=true: no CQL server can exist on CI machines.
        pytest.skip(SCYLLA_SKIP)
    from state.scylla import ScyllaStore, parse_scylla_url

    keyspace = f"flowbridge_test_{uuid.uuid4().hex[:12]}"
    query = f"?dc={os.environ['SCYLLA_DC']}" if os.environ.get("SCYLLA_DC") else ""
    config = parse_scylla_url(f"scylla://{hosts}/{keyspace}{query}", env=os.environ)
    admin = ScyllaStore(config)
    admin.migrate()
    try:
        yield config
    finally:
        try:
            admin._c().ddl(f"DROP KEYSPACE IF EXISTS {keyspace}")
        finally:
            admin.close()


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
