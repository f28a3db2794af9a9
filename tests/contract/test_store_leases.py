"""Contract: node leases (schema 6) on every store: the claim's lease, renewals, the migration."""

from __future__ import annotations

from state.constants import NODE_PENDING, NODE_RUNNING, SCHEMA_VERSION
from state.protocol import StateStore
from state.records import NodeCompletion
from tests.contract.helpers import StoreSpec, started

ME, OTHER = "host-a:11:task-1", "host-b:22:task-2"


def _claimed(store: StateStore, holder: str | None = ME, until: float | None = 1e10) -> str:
    run_id = started(store, "a")
    began = store.begin_attempt(run_id, "a", 0, 1, claimed_by=holder, lease_until=until)
    assert began is not None and began.claimed_by == holder and began.lease_until == until
    return run_id


def test_the_claim_records_who_holds_the_attempt_and_its_lease(store: StateStore) -> None:
    run_id = _claimed(store, until=2_000_000_000.0)
    rec = store.get_node(run_id, "a")
    assert rec is not None and rec.status == NODE_RUNNING
    assert (rec.claimed_by, rec.lease_until) == (ME, 2_000_000_000.0)


def test_a_claim_without_a_lease_has_none(store: StateStore) -> None:
    run_id = started(store, "a")
    assert store.begin_attempt(run_id, "a", 0, 1) is not None
    rec = store.get_node(run_id, "a")
    assert rec is not None and rec.claimed_by is None and rec.lease_until is None


def test_the_holder_renews_its_lease_and_that_is_not_progress(store: StateStore) -> None:
    run_id = _claimed(store, until=2_000_000_000.0)
    before = store.get_node(run_id, "a")
    run_before = store.get_run(run_id)
    assert before is not None and run_before is not None
    assert store.renew_lease(run_id, "a", attempt=1, claimed_by=ME, until=2_000_000_030.0)
    after = store.get_node(run_id, "a")
    run_after = store.get_run(run_id)
    assert after is not None and run_after is not None
    assert after.lease_until == 2_000_000_030.0 and after.claimed_by == ME
    assert after.updated_at == before.updated_at and after.deliveries == before.deliveries
    assert run_after.updated_at == run_before.updated_at


def test_only_the_holder_of_the_running_attempt_renews(store: StateStore) -> None:
    run_id = _claimed(store, until=2_000_000_000.0)
    assert not store.renew_lease(run_id, "a", attempt=1, claimed_by=OTHER, until=2_000_000_090.0)
    assert not store.renew_lease(run_id, "a", attempt=2, claimed_by=ME, until=2_000_000_090.0)
    assert not store.renew_lease(run_id, "nope", attempt=1, claimed_by=ME, until=2_000_000_090.0)
    rec = store.get_node(run_id, "a")
    assert rec is not None and rec.lease_until == 2_000_000_000.0


def test_a_takeover_moves_the_lease_and_the_old_holder_loses_it(store: StateStore) -> None:
    run_id = _claimed(store, until=1.0)  # long expired
    took = store.begin_attempt(
        run_id, "a", 0, 1, takeover=True, claimed_by=OTHER, lease_until=2_000_000_000.0
    )
    assert took is not None and took.deliveries == 2 and took.claimed_by == OTHER
    assert not store.renew_lease(run_id, "a", attempt=1, claimed_by=ME, until=2_000_000_050.0)
    assert store.renew_lease(run_id, "a", attempt=1, claimed_by=OTHER, until=2_000_000_050.0)
    # A takeover by a worker with leases off clears the lease: the old rule applies again.
    assert store.begin_attempt(run_id, "a", 0, 1, takeover=True) is not None
    rec = store.get_node(run_id, "a")
    assert rec is not None and rec.claimed_by is None and rec.lease_until is None


def test_a_finished_attempt_is_not_renewed(store: StateStore) -> None:
    run_id = _claimed(store)
    res = store.commit_node(NodeCompletion(run_id=run_id, node_id="a", attempt=1, output=1))
    assert res.applied
    assert not store.renew_lease(run_id, "a", attempt=1, claimed_by=ME, until=2e10)
    retried = _claimed(store)
    assert store.retry_node(retried, "a", 0, attempt=1, error="boom")
    rec = store.get_node(retried, "a")
    assert rec is not None and rec.status == NODE_PENDING
    assert not store.renew_lease(retried, "a", attempt=1, claimed_by=ME, until=2e10)


def test_a_batch_item_claimed_with_create_gets_its_lease(store: StateStore) -> None:
    run_id = started(store, "a")
    item = store.begin_attempt(
        run_id, "a[3]", 0, 1, create=True, claimed_by=ME, lease_until=2_000_000_000.0
    )
    assert item is not None and item.lease_until == 2_000_000_000.0
    assert store.renew_lease(run_id, "a[3]", attempt=1, claimed_by=ME, until=2_000_000_001.0)


def test_an_older_store_gains_the_lease_columns(spec: StoreSpec) -> None:
    """A store at schema 5 (no lease columns) migrates to 6 and keeps its rows."""
    fresh_spec = spec.fresh()
    old = fresh_spec.open()
    try:
        old.migrate()
        run_id = started(old, "a")
        _drop_lease_columns(fresh_spec, old)
        fresh_spec.set_schema_version(old, 5)
        old.close()
        store = fresh_spec.open()
        try:
            change = store.migrate()
            assert (change.before, change.after) == (5, SCHEMA_VERSION)
            assert fresh_spec.schema_version(store) == SCHEMA_VERSION == 6
            rec = store.get_node(run_id, "a")
            assert rec is not None and rec.lease_until is None and rec.claimed_by is None
            assert store.begin_attempt(run_id, "a", 0, 1, claimed_by=ME, lease_until=2e9)
            assert store.renew_lease(run_id, "a", attempt=1, claimed_by=ME, until=2e9 + 1)
            store.migrate()  # idempotent
        finally:
            fresh_spec.discard(store)
            store.close()
    finally:
        old.close()


def _drop_lease_columns(spec: StoreSpec, store: StateStore) -> None:
    """Make the data look like schema 5's: no ``claimed_by`` or ``lease_until`` on nodes."""
    if spec.backend == "sqlite":
        import sqlite3

        with sqlite3.connect(store.path) as db:  # type: ignore[attr-defined]
            db.execute("ALTER TABLE nodes DROP COLUMN claimed_by")
            db.execute("ALTER TABLE nodes DROP COLUMN lease_until")
            columns = {r[1] for r in db.execute("PRAGMA table_info(nodes)")}
            assert "claimed_by" not in columns and "lease_until" not in columns
    elif spec.backend == "scylla":
        ks = store.config.keyspace  # type: ignore[attr-defined]
        store._c().ddl(f"ALTER TABLE {ks}.nodes DROP claimed_by")  # type: ignore[attr-defined]
        store._c().ddl(f"ALTER TABLE {ks}.nodes DROP lease_until")  # type: ignore[attr-defined]
    # memory: its rows are objects whose lease fields default to None; only the version moves.
