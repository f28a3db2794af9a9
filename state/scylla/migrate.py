"""Creating and upgrading the Scylla schema (``flowbridge migrate``, a release step).

Idempotent: ``CREATE ... IF NOT EXISTS``, an ``ALTER TABLE ... ADD`` of a column
that exists is skipped, and the version is recorded by LWT, so two releases
migrating at once (or a migration cut short and run again) end in one schema.
A store whose schema is newer than this code is refused.
"""

from __future__ import annotations

from collections.abc import Callable

from state.constants import SCHEMA_VERSION
from state.errors import SchemaError
from state.records import SchemaChange
from state.scylla.config import ScyllaConfig
from state.scylla.driver import _Conn
from state.scylla.schema import keyspace_cql, migrations, table_cql
from state.scylla.session import MAX_CAS_ROUNDS

__all__ = ["migrate"]


def _column_exists(exc: SchemaError) -> bool:
    """Whether an ``ALTER TABLE ... ADD`` failed because the column is there already."""
    text = str(exc).lower()
    return "already exist" in text or "conflicts with an existing column" in text


def migrate(c: _Conn, config: ScyllaConfig, clock: Callable[[], float]) -> SchemaChange:
    """Create keyspace and tables if missing, wait for schema agreement, record the version."""
    ks = config.keyspace
    c.ddl(keyspace_cql(ks, config.replication_map(), tablets_off=c.scylla_tablets()))
    for cql in table_cql(ks):
        c.ddl(cql)
    c.wait_for_schema_agreement()
    rows = c.execute("version_get", (), serial=True)
    created = not rows
    for _ in range(MAX_CAS_ROUNDS):
        if rows:
            break
        # An ambiguous timeout is settled by the read that follows.
        c.lwt("version_init", (SCHEMA_VERSION, clock()), None, lambda: None)
        rows = c.execute("version_get", (), serial=True)
    if not rows:
        raise SchemaError(f"Scylla store {config.redacted_url()}: cannot record the schema version")
    stored = int(rows[0]["version"])
    if stored > SCHEMA_VERSION:
        raise SchemaError(
            f"Scylla store {config.redacted_url()} has schema {stored}, newer than this "
            f"flowbridge ({SCHEMA_VERSION}): upgrade flowbridge"
        )
    for version, statements in migrations(ks, from_version=stored, to_version=SCHEMA_VERSION):
        for cql in statements:
            try:
                c.ddl(cql)
            except SchemaError as exc:
                # A migration cut short (or run by two releases at once) is run again.
                if " ADD " not in cql or not _column_exists(exc):
                    raise
        c.wait_for_schema_agreement()
        c.lwt("version_set", (version, version - 1), None, lambda: None)
    return SchemaChange(before=None if created else stored, after=SCHEMA_VERSION)
