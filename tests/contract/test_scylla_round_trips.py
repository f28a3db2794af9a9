"""The round-trip budget of a node hop on the real CQL server (docs/state.md, "Round trips").

The production engine runs a chain and a fan-out in this process
(``flowbridge.testing.Runner``) over a Scylla store whose connection counts
what it sends; each task is counted on its own. A change that adds an LWT, a
statement or a round trip to a hop fails here: if it is worth it, change the
budget and the table in docs/state.md together.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import bench.apps  # noqa: F401  (registers the bench blueprints and nodes)
from bench.round_trips import KINDS, budget, count_run
from state.scylla import ScyllaStore, parse_scylla_url

#: (LWTs, plain writes, reads, round trips) of each step, as docs/state.md's "after" table.
BUDGET: dict[str, tuple[int, int, int, int]] = {
    "run start": (2, 6, 0, 4),
    "plain hop": (3, 6, 3, 7),
    "last node": (14, 66, 51, 22),
    "fan-out source": (13, 20, 6, 12),
    "fan-out branch": (2, 7, 3, 7),
    "join firing": (2, 4, 2, 7),
    "join node": (16, 87, 59, 22),
}
#: Index writes a step may add when the run's minute bucket changes (or is this process's
#: first in that minute): they go in the same round trip, so only the writes count changes.
INDEX_SLACK = 3


def _check(step: str, got: dict[str, float]) -> None:
    lwts, writes, reads, trips = BUDGET[step]
    assert (got["lwts"], got["reads"], got["round_trips"]) == (lwts, reads, trips), (step, got)
    assert writes <= got["writes"] <= writes + INDEX_SLACK, (step, got)


@pytest.fixture(scope="module")
def scylla(scylla_url: str) -> Iterator[ScyllaStore]:
    """A store on the session keyspace, for this module's runs."""
    store = ScyllaStore(parse_scylla_url(scylla_url, env=os.environ))
    yield store
    store.close()


@pytest.fixture(scope="module")
def rows(scylla: ScyllaStore) -> dict[str, dict[str, float]]:
    """The counted table: one chain and one fan-out run."""
    return budget(scylla)


def test_a_plain_hop_stays_within_its_budget(rows: dict[str, dict[str, float]]) -> None:
    # The median of the chain's middle hops: one LWT to claim, one to complete, one to
    # create the successor; the run and node read together; seven round trips.
    hop = next(v for k, v in rows.items() if k.startswith("plain hop"))
    assert tuple(hop[k] for k in KINDS) == BUDGET["plain hop"], hop


@pytest.mark.parametrize(
    "step",
    ["run start", "last node", "fan-out source", "fan-out branch", "join firing", "join node"],
)
def test_every_step_stays_within_its_budget(rows: dict[str, dict[str, float]], step: str) -> None:
    _check(step, next(v for k, v in rows.items() if k.startswith(step)))


def test_the_counter_costs_nothing_when_off(scylla: ScyllaStore) -> None:
    conn = scylla.session.conn()
    assert conn.counts is None
    with scylla.session.counting() as counts:
        assert conn.counts is counts
    assert conn.counts is None
    before = counts.round_trips
    count_run(scylla, "bench.one")
    assert counts.round_trips == before  # a closed counter counts nothing more


def test_a_counted_run_is_the_same_run(scylla: ScyllaStore) -> None:
    run = count_run(scylla, "bench.chain10")
    assert run.status == "completed"
    assert [t.label for t in run.tasks] == ["start", *(f"n{i:03d}" for i in range(10))]
