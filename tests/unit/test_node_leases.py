"""Node leases: the rule (``state.rules.leases``) and the worker's renewer (``tasks.leases``)."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace

import pytest

from state import open_store
from state.protocol import StateStore
from state.records import NodeState, NodeStatus, Run
from state.rules import leases
from tasks.leases import Renewer, held, identity, renewer

NOW = 1_000_000.0
OLDER = NOW - 300.0  # now - stalled_after_s


def node(status: str = NodeStatus.RUNNING, **kw: object) -> NodeState:
    base = NodeState(run_id="r", node_id="a", status=status, attempts=1, updated_at=NOW - 1000)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_a_running_node_with_a_live_lease_is_never_stalled_however_old() -> None:
    rec = node(claimed_by="w:1:t", lease_until=NOW + 5, updated_at=NOW - 86_400)
    assert leases.leased(rec)
    assert not leases.stalled(rec, now=NOW, older_than=OLDER)
    assert not leases.expired(rec, now=NOW)
    assert leases.lease_left(rec, now=NOW) == 5


def test_a_running_node_is_stalled_the_moment_its_lease_expired() -> None:
    rec = node(claimed_by="w:1:t", lease_until=NOW - 0.001, updated_at=NOW - 2)
    assert leases.stalled(rec, now=NOW, older_than=OLDER)
    assert leases.expired(rec, now=NOW)
    # At the instant of expiry it still holds: stalled is "now > lease_until".
    assert not leases.stalled(rec, now=NOW - 0.001, older_than=OLDER)


def test_a_node_without_a_lease_keeps_the_stalled_after_rule() -> None:
    old, recent = node(updated_at=OLDER - 1), node(updated_at=OLDER + 1)
    assert leases.stalled(old, now=NOW, older_than=OLDER)
    assert not leases.stalled(recent, now=NOW, older_than=OLDER)
    assert not leases.expired(old, now=NOW) and leases.lease_left(old, now=NOW) is None


def test_a_lease_left_on_a_node_that_is_not_running_does_not_count() -> None:
    # A retried node is pending again with its last holder's columns: the old rule decides.
    pending = node(NodeStatus.PENDING, claimed_by="w:1:t", lease_until=NOW - 50, updated_at=NOW)
    assert not leases.leased(pending) and not leases.expired(pending, now=NOW)
    assert not leases.stalled(pending, now=NOW, older_than=OLDER)
    assert leases.stalled(replace(pending, updated_at=OLDER - 1), now=NOW, older_than=OLDER)


def test_only_the_holder_of_the_running_attempt_renews() -> None:
    rec = node(claimed_by="w:1:t", lease_until=NOW + 1)
    renewed = leases.renewed(rec, attempt=1, claimed_by="w:1:t", until=NOW + 30)
    assert renewed is not None and renewed.lease_until == NOW + 30
    assert renewed.updated_at == rec.updated_at  # a renewal is not progress
    assert leases.renewed(rec, attempt=1, claimed_by="w:2:t", until=NOW + 30) is None
    assert leases.renewed(rec, attempt=2, claimed_by="w:1:t", until=NOW + 30) is None
    assert leases.renewed(None, attempt=1, claimed_by="w:1:t", until=NOW + 30) is None
    done = replace(rec, status=NodeStatus.COMPLETED)
    assert leases.renewed(done, attempt=1, claimed_by="w:1:t", until=NOW + 30) is None


def test_a_lease_never_moves_earlier() -> None:
    rec = node(claimed_by="w:1:t", lease_until=NOW + 60)
    renewed = leases.renewed(rec, attempt=1, claimed_by="w:1:t", until=NOW + 30)
    assert renewed is not None and renewed.lease_until == NOW + 60


# --- the worker's renewer (tasks.leases) on a real memory store ----------------------------
def _store() -> StateStore:
    store = open_store(f"memory://leases-{uuid.uuid4().hex[:8]}")
    store.migrate()
    store.create_run(
        Run(run_id="r", blueprint_id="bp", version="1", status="running", input={}, snapshot={}),
        start_nodes=["a"],
    )
    return store


def test_the_renewer_keeps_the_lease_while_the_attempt_runs_and_stops_after() -> None:
    store = _store()
    keeper = Renewer(store=store, clock=time.time, lease_s=0.3)
    began = store.begin_attempt("r", "a", 0, 1, claimed_by="w:1:t", lease_until=keeper.until())
    assert began is not None
    with held(keeper, began):
        time.sleep(0.7)  # past the first lease: only renewals keep it
        rec = store.get_node("r", "a")
        assert rec is not None and rec.lease_until is not None
        assert rec.lease_until > time.time(), "renewed every 0.1 s"
    time.sleep(0.5)
    rec = store.get_node("r", "a")
    assert rec is not None and rec.lease_until is not None and rec.lease_until < time.time()


def test_a_renewal_that_finds_the_lease_taken_over_warns(caplog: pytest.LogCaptureFixture) -> None:
    store = _store()
    keeper = Renewer(store=store, clock=time.time, lease_s=0.3)
    began = store.begin_attempt("r", "a", 0, 1, claimed_by="w:1:t", lease_until=keeper.until())
    assert began is not None
    with caplog.at_level(logging.WARNING, logger="flowbridge.leases"), held(keeper, began):
        store.begin_attempt("r", "a", 0, 1, takeover=True, claimed_by="w:2:t", lease_until=2e9)
        time.sleep(0.4)
    assert any("lost its lease" in r.getMessage() for r in caplog.records), caplog.text
    rec = store.get_node("r", "a")
    assert rec is not None and (rec.claimed_by, rec.lease_until) == ("w:2:t", 2e9)


def test_leases_off_or_no_identity_take_no_lease() -> None:
    store = _store()
    assert renewer(store, time.time, 0) is None
    assert identity("celery@h", "t-1").startswith("celery@h:") and identity(None, None)
