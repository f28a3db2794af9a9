"""Join policies and chord-region analysis (pure decisions; the store makes them stick)."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.blueprint import Blueprint
from tasks.engine.shapes import chord_region, decide, failure_is_tolerated, losers


def fan(strategy: str = "all", n: int | None = None, chains: int = 3, length: int = 1) -> Blueprint:
    nodes: list[dict[str, Any]] = [{"id": "f", "uses": "x"}]
    edges = []
    for b in range(chains):
        prev = "f"
        for i in range(length):
            nid = f"b{b}_{i}"
            nodes.append({"id": nid, "uses": "x"})
            edges.append({"source": prev, "target": nid})
            prev = nid
        edges.append({"source": prev, "target": "j"})
    cfg: dict[str, Any] = {"joinStrategy": strategy}
    if n is not None:
        cfg["n"] = n
    nodes.append({"id": "j", "uses": "x", "config": cfg})
    return Blueprint.from_dict({"id": "t", "nodes": nodes, "edges": edges})


P = ["b0_0", "b1_0", "b2_0"]


@pytest.mark.parametrize(
    ("strategy", "n", "arrivals", "action"),
    [
        ("all", None, {"b0_0": "completed"}, "wait"),
        ("all", None, dict.fromkeys(P, "completed"), "fire"),
        ("all", None, {"b0_0": "completed", "b1_0": "skipped", "b2_0": "skipped"}, "fire"),
        ("all", None, dict.fromkeys(P, "skipped"), "skip"),
        ("all", None, {"b0_0": "failed"}, "fail"),
        ("all-settled", None, {"b0_0": "failed", "b1_0": "completed"}, "wait"),
        ("all-settled", None, {"b0_0": "failed", "b1_0": "completed", "b2_0": "skipped"}, "fire"),
        ("race", None, {"b2_0": "completed"}, "fire"),
        ("race", None, {"b2_0": "failed", "b1_0": "failed"}, "wait"),
        ("race", None, dict.fromkeys(P, "failed"), "fail"),
        ("any", None, dict.fromkeys(P, "skipped"), "skip"),
        ("quorum", 2, {"b0_0": "completed"}, "wait"),
        ("quorum", 2, {"b0_0": "completed", "b2_0": "completed"}, "fire"),
        ("quorum", 2, {"b0_0": "failed", "b2_0": "failed"}, "fail"),
    ],
)
def test_policy_decisions(
    strategy: str, n: int | None, arrivals: dict[str, str], action: str
) -> None:
    assert decide(fan(strategy, n), "j", arrivals).action == action


def test_quorum_failure_names_what_is_missing() -> None:
    d = decide(fan("quorum", 2), "j", {"b0_0": "failed", "b2_0": "failed"})
    assert "needs 2 completed branch(es); only 0 completed and 1 can still arrive" in d.reason


def test_chains_of_plain_nodes_into_an_all_join_form_a_chord_region() -> None:
    region = chord_region(fan(length=3), "f")
    assert region is not None
    assert region.join == "j"
    assert region.chains["b1_0"] == ("b1_0", "b1_1", "b1_2")


def test_non_all_joins_nested_fanouts_and_waits_are_not_chords() -> None:
    assert chord_region(fan("race"), "f") is None
    bp = Blueprint.from_dict(
        {
            "id": "n",
            "nodes": [{"id": i, "uses": "x"} for i in ["f", "a", "b", "c", "d", "j"]],
            "edges": [
                {"source": "f", "target": "a"},
                {"source": "f", "target": "b"},
                {"source": "a", "target": "c"},
                {"source": "a", "target": "d"},
                {"source": "c", "target": "j"},
                {"source": "d", "target": "j"},
                {"source": "b", "target": "j"},
            ],
        }
    )
    assert chord_region(bp, "f") is None, "a branch that fans out again leaves the chord shape"
    assert chord_region(bp, "a") is None, "j has a predecessor (b) outside a's fan-out"


def test_race_losers_are_the_nodes_that_only_lead_into_the_join() -> None:
    assert losers(fan("race", length=2), "j") == {f"b{b}_{i}" for b in range(3) for i in range(2)}
    assert losers(fan("all", length=2), "j") == frozenset()


def test_failures_are_tolerated_only_when_every_path_meets_a_tolerant_join() -> None:
    assert failure_is_tolerated(fan("all-settled"), "b0_0")
    assert not failure_is_tolerated(fan("all"), "b0_0")
    assert not failure_is_tolerated(fan("all-settled"), "j"), "a leaf failure fails the run"
