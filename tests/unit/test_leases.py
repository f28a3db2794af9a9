"""Outbox shard leases on a real redis-server: a fair split, takeover after expiry, fencing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from bridge.leases import SAFETY, ShardLeases
from flowbridge.dev import free_port
from state.keys import OUTBOX_SHARDS
from tests.conftest import Isolation


@pytest.fixture
def client(isolation: Isolation) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(isolation.redis_db_url)
    yield c
    c.close()


def _leases(client: redis.Redis, iso: Isolation, member: str, lease_s: float = 1.0) -> ShardLeases:
    return ShardLeases(
        client, prefix=iso.redis_prefix, hint_key=f"{iso.redis_prefix}hint", lease_s=lease_s,
        member=member,
    )  # fmt: skip


def test_one_relay_holds_every_shard_and_a_second_gets_half(
    client: redis.Redis, isolation: Isolation
) -> None:
    a = _leases(client, isolation, "a")
    assert a.held() == frozenset(range(OUTBOX_SHARDS))
    b = _leases(client, isolation, "b")
    b.refresh()  # counts two relays; every shard is taken: b waits
    assert b.held() == frozenset()
    a.refresh()  # over its share now: gives the extra back
    b.refresh()
    assert len(a.held()) == len(b.held()) == OUTBOX_SHARDS // 2
    assert not a.held() & b.held()


def test_a_dead_relays_shards_are_taken_over_after_the_lease(
    client: redis.Redis, isolation: Isolation
) -> None:
    a = _leases(client, isolation, "a")
    b = _leases(client, isolation, "b")
    a.refresh()
    b.refresh()
    a.refresh()
    b.refresh()
    assert len(b.held()) == OUTBOX_SHARDS // 2
    # a stops refreshing (killed): after its lease, b sees one relay and takes every shard.
    time.sleep(1.2)
    b.refresh()
    assert b.held() == frozenset(range(OUTBOX_SHARDS))


def test_a_clean_release_hands_the_shards_over_at_once(
    client: redis.Redis, isolation: Isolation
) -> None:
    a = _leases(client, isolation, "a", lease_s=30)
    b = _leases(client, isolation, "b", lease_s=30)
    a.refresh()
    b.refresh()
    a.release()
    b.refresh()
    assert b.held() == frozenset(range(OUTBOX_SHARDS))


def test_a_holder_that_cannot_renew_stops_before_its_lease_ends(
    client: redis.Redis, isolation: Isolation
) -> None:
    now = [1000.0]
    a = ShardLeases(
        client,
        prefix=isolation.redis_prefix,
        hint_key="h",
        lease_s=10,
        member="a",
        clock=lambda: now[0],
    )
    assert len(a.held()) == OUTBOX_SHARDS
    a.redis = redis.Redis(port=free_port(), socket_connect_timeout=0.2)  # Redis is gone
    now[0] += 10 * SAFETY - 0.1
    assert len(a.held()) == OUTBOX_SHARDS, "still within the trusted part of the lease"
    now[0] += 0.2
    assert a.held() == frozenset(), "fenced: no publishing once the lease may have passed"


def test_a_lease_taken_by_another_is_dropped_at_the_next_renewal(
    client: redis.Redis, isolation: Isolation
) -> None:
    a = _leases(client, isolation, "a", lease_s=30)
    a.refresh()
    client.set(f"{isolation.redis_prefix}flowbridge:outbox-lease:3", "other")
    a.refresh()
    assert 3 not in a.held()
