"""flowcraft's blueprint fields in the model: inputs, transforms, unknown keys, loops."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tasks.blueprint import Blueprint, validate
from tasks.errors import BlueprintError


def parse_issues(data: dict[str, Any]) -> list[str]:
    _, issues = Blueprint.parse(data)
    return [f"{i.code}: {i.message}" for i in issues]


def test_inputs_and_transform_are_kept_and_round_trip() -> None:
    bp = Blueprint.from_dict(
        {
            "id": "f",
            "nodes": [
                {"id": "a", "uses": "u"},
                {"id": "b", "uses": "u", "inputs": "a"},
                {"id": "c", "uses": "u", "inputs": {"x": "a.total", "y": "seed"}},
            ],
            "edges": [
                {"source": "a", "target": "b", "transform": "input * 2"},
                {"source": "a", "target": "c"},
            ],
        }
    )
    assert bp.node("b").inputs == "a"
    assert bp.node("c").inputs == {"x": "a.total", "y": "seed"}
    assert bp.edges[0].transform == "input * 2"
    again = Blueprint.from_dict(json.loads(json.dumps(bp.to_dict())))
    assert again == bp
    assert again.node("c").inputs == {"x": "a.total", "y": "seed"}


def test_unknown_keys_are_refused_at_every_level_listing_the_known_ones() -> None:
    issues = parse_issues(
        {
            "id": "f",
            "ui": {"x": 1},
            "nodes": [
                {"id": "a", "uses": "u", "input": "x", "color": "red"},
                {"id": "b", "uses": "u", "_sourceLocation": {"file": "f.ts", "line": 3}},
            ],
            "edges": [
                {"source": "a", "target": "b", "condtion": "a.ok"},
                {"source": "a", "target": "b", "weight": 3, "_sourceLocation": {}},
            ],
        }
    )
    assert issues == [
        "unknown-key: blueprint 'f': unknown key 'ui' (known: id, version, metadata, nodes, edges)",
        "unknown-key: node 'a': unknown key 'input' (did you mean 'inputs'?)",
        "unknown-key: node 'a': unknown key 'color' "
        "(known: id, uses, params, inputs, config, _sourceLocation)",
        "unknown-key: edge 'a' -> 'b': unknown key 'condtion' (did you mean 'condition'?)",
        "unknown-key: edge 'a' -> 'b': unknown key 'weight' "
        "(known: source, target, action, condition, transform, _sourceLocation)",
    ]


def test_metadata_stays_free_form_as_in_flowcraft() -> None:
    bp = Blueprint.from_dict(
        {
            "id": "f",
            "metadata": {"version": "2", "description": "anything", "owner": {"team": "x"}},
            "nodes": [{"id": "a", "uses": "u"}],
        }
    )
    assert bp.metadata == {"description": "anything", "owner": {"team": "x"}}
    assert "cycleEntryPoints must be a list" in " ".join(
        parse_issues({"id": "f", "metadata": {"cycleEntryPoints": "a"}, "nodes": []})
    )


@pytest.mark.parametrize(
    ("inputs", "ok"),
    [("a", True), ({"k": "a"}, True), ("", True), (3, False), ({"k": 3}, False), (["a"], False)],
)
def test_inputs_must_be_a_string_or_an_object_of_strings(inputs: Any, ok: bool) -> None:
    issues = parse_issues({"id": "f", "nodes": [{"id": "a", "uses": "u", "inputs": inputs}]})
    assert (issues == []) is ok, issues


def test_a_transform_that_does_not_parse_is_refused() -> None:
    bp = Blueprint.from_dict(
        {
            "id": "f",
            "nodes": [{"id": "a", "uses": "u"}, {"id": "b", "uses": "u"}],
            "edges": [{"source": "a", "target": "b", "transform": "input.map(x => x)"}],
        }
    )
    [issue] = validate(bp)
    assert issue.code == "bad-transform"
    assert "transform 'input.map(x => x)' is invalid: syntax error" in issue.message


def loop_blueprint(**changes: Any) -> dict[str, Any]:
    bp: dict[str, Any] = {
        "id": "loop",
        "nodes": [
            {"id": "init", "uses": "u"},
            {"id": "loop", "uses": "loop-controller", "params": {"condition": "count < 3"}},
            {"id": "inc", "uses": "u"},
            {"id": "check", "uses": "u"},
            {"id": "done", "uses": "u"},
        ],
        "edges": [
            {"source": "init", "target": "loop"},
            {"source": "loop", "target": "inc", "action": "continue"},
            {"source": "inc", "target": "check"},
            {"source": "check", "target": "loop"},
            {"source": "loop", "target": "done", "action": "break"},
        ],
    }
    bp.update(changes)
    return bp


def test_a_loop_through_a_loop_controller_is_not_a_cycle() -> None:
    bp = Blueprint.from_dict(loop_blueprint())
    assert validate(bp) == []
    a = bp.analysis
    loop = a.loops["loop"]
    assert (loop.entries, loop.body, loop.ends) == (("inc",), ("inc", "check"), ("check",))
    assert "loop" not in a.join_nodes, "a controller is reached by one edge per iteration"
    assert a.target_iteration("init", "loop", 0) == 0
    assert a.target_iteration("loop", "inc", 4) == 4
    assert a.target_iteration("inc", "check", 4) == 4
    assert a.target_iteration("check", "loop", 4) == 5, "the edge back starts the next pass"
    assert a.target_iteration("loop", "done", 5) == 0, "leaving the loop"


def test_loops_that_cannot_run_are_refused() -> None:
    no_continue = loop_blueprint()
    no_continue["edges"][1] = {"source": "loop", "target": "inc", "action": "again"}
    messages = [i.message for i in validate(Blueprint.from_dict(no_continue))]
    assert any("has no 'continue' edge" in m for m in messages), messages

    side_door = loop_blueprint()
    side_door["edges"].append({"source": "init", "target": "check"})
    issues = validate(Blueprint.from_dict(side_door))
    assert [i.code for i in issues] == ["bad-loop"]
    assert "edge 'init' -> 'check' enters the loop's body from outside" in issues[0].message

    plain = Blueprint.from_dict(
        {
            "id": "c",
            "nodes": [{"id": "a", "uses": "u"}, {"id": "b", "uses": "u"}, {"id": "s", "uses": "u"}],
            "edges": [
                {"source": "s", "target": "a"},
                {"source": "a", "target": "b"},
                {"source": "b", "target": "a"},
            ],
        }
    )
    [cycle] = validate(plain)
    assert cycle.code == "cycle"
    assert "a loop must go through a loop-controller node's 'continue' edge" in cycle.message


def test_build_refuses_unknown_node_keys() -> None:
    with pytest.raises(BlueprintError, match="unknown key 'usees'"):
        Blueprint.build("f", nodes=[{"id": "a", "uses": "u", "usees": "v"}])
