"""Scylla/Cassandra state store: the production backend, on scylla-driver.

What it guarantees, and how (``docs/state.md`` has the schema and the reasons):

- Every decision is one lightweight transaction (LWT, Paxos) on one partition:
  run creation (``IF NOT EXISTS``), run status changes (``IF status IN``), node
  transitions (``IF status IN`` the active statuses; ``begin_attempt`` is a
  compare-and-set on status, attempts and deliveries), a join firing
  (``IF NOT EXISTS`` on the join's node record), parking and waking a node
  (compare-and-set on the node row's token), an event's dedupe and its
  consumption (``IF NOT EXISTS`` and a claim on its inbox row), fences and
  stall claims (compare-and-set on the run row's token). Each node record is a
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

Where each part lives: ``state.scylla_config`` (the URL), ``state.scylla_driver``
(the connection), ``state.scylla_rows`` (stored values), ``state.scylla_core``
(per-process state), ``state.scylla_effects`` (follow-up writes, transitions),
``state.scylla_retention`` (TTLs of finished runs), ``state.scylla_runs``,
``state.scylla_nodes``, ``state.scylla_waits`` (parking, timers), ``state.scylla_inbox``
(events), ``state.scylla_fences`` (fences, stall claims), ``state.scylla_index`` and
``state.scylla_outbox`` (the operations); ``state.scylla_schema`` has the CQL.
Names with a leading underscore in those modules are shared among them only.
"""

from __future__ import annotations

from collections.abc import Mapping

from state.constants import SCHEMA_VERSION
from state.errors import SchemaError
from state.models import SchemaChange
from state.scylla_config import ScyllaConfig, parse_replication, parse_scylla_url
from state.scylla_core import MAX_CAS_ROUNDS
from state.scylla_fences import FencesMixin
from state.scylla_inbox import InboxMixin
from state.scylla_index import IndexMixin
from state.scylla_nodes import NodesMixin
from state.scylla_outbox import OutboxMixin
from state.scylla_runs import RunsMixin
from state.scylla_schema import keyspace_cql, migrations, table_cql

__all__ = ["ScyllaConfig", "ScyllaStore", "parse_replication", "parse_scylla_url"]


def _column_exists(exc: SchemaError) -> bool:
    """Whether an ``ALTER TABLE ... ADD`` failed because the column is there already."""
    text = str(exc).lower()
    return "already exist" in text or "conflicts with an existing column" in text


class ScyllaStore(RunsMixin, NodesMixin, InboxMixin, FencesMixin, IndexMixin, OutboxMixin):
    """A ``StateStore`` on Scylla or Cassandra (scylla-driver), safe across processes and hosts."""

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

    def migrate(self) -> SchemaChange:
        """Create keyspace and tables if missing, wait for schema agreement, record the version."""
        c = self._c()
        ks = self.config.keyspace
        c.ddl(keyspace_cql(ks, self.config.replication_map(), tablets_off=c.scylla_tablets()))
        for cql in table_cql(ks):
            c.ddl(cql)
        c.wait_for_schema_agreement()
        rows = c.execute("version_get", (), serial=True)
        created = not rows
        for _ in range(MAX_CAS_ROUNDS):
            if rows:
                break
            # An ambiguous timeout is settled by the read that follows.
            c.lwt("version_init", (SCHEMA_VERSION, self._clock()), None, lambda: None)
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
                try:
                    c.ddl(cql)
                except SchemaError as exc:
                    # A migration cut short (or run by two releases at once) is run again.
                    if " ADD " not in cql or not _column_exists(exc):
                        raise
            c.wait_for_schema_agreement()
            c.lwt("version_set", (version, version - 1), None, lambda: None)
        return SchemaChange(before=None if created else stored, after=SCHEMA_VERSION)

    def purge_expired(self, *, limit: int = 1000) -> int:
        """Nothing to do: finished runs expire by TTL (see docs/state.md for the tombstones)."""
        return 0
