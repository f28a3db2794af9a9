"""Blueprint model, parsing, analysis, durations, loading and the tasks errors."""

from __future__ import annotations

import itertools
import json
import pickle
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import tasks.blueprint as blueprint_pkg
import tasks.errors as errors_mod
from tasks.blueprint import (
    Blueprint,
    EdgeSpec,
    NodeConfig,
    NodeSpec,
    ValidationIssue,
    format_duration,
    load_dir,
    load_file,
    loads,
    parse_duration,
)
from tasks.errors import (
    BlueprintError,
    ConditionError,
    NodeError,
    UnknownBlueprintError,
    UnknownNodeError,
)

ORDER: dict[str, Any] = {
    "id": "order",
    "metadata": {"version": 2, "name": "Order flow"},
    "nodes": [
        {
            "id": "charge",
            "uses": "charge-card",
            "params": {"amount": 3, "nested": {"k": [1, 2]}},
            "config": {
                "maxRetries": 2,
                "retryDelay": 500,
                "timeout": "5s",
                "fallback": "manual",
            },
        },
        {"id": "manual", "uses": "manual-review"},
        {"id": "ship", "uses": "ship", "config": {"joinStrategy": "any"}},
    ],
    "edges": [
        {
            "source": "charge",
            "target": "ship",
            "action": "approved",
            "condition": "output.total > 10 && context.vip == true",
        }
    ],
}


def issue_codes(exc: BlueprintError) -> list[str]:
    return [i.code for i in exc.issues]


# --- parsing ---------------------------------------------------------------------------


def test_from_dict_parses_flowcraft_json() -> None:
    bp = Blueprint.from_dict(ORDER)
    assert bp.id == "order"
    assert bp.version == "2"
    assert bp.metadata == {"name": "Order flow"}
    assert bp.node_ids == ("charge", "manual", "ship")
    charge = bp.node("charge")
    assert charge.uses == "charge-card"
    assert charge.params == {"amount": 3, "nested": {"k": [1, 2]}}
    assert charge.config == NodeConfig(
        max_attempts=2, retry_delay_s=0.5, timeout_s=5.0, fallback="manual"
    )
    assert bp.node("manual").config == NodeConfig()
    assert bp.node("ship").config.join_strategy == "any"
    assert bp.edges == (
        EdgeSpec(
            source="charge",
            target="ship",
            action="approved",
            condition="output.total > 10 && context.vip == true",
        ),
    )


def test_params_are_copied_from_the_input() -> None:
    data = json.loads(json.dumps(ORDER))
    bp = Blueprint.from_dict(data)
    data["nodes"][0]["params"]["nested"]["k"].append(3)
    assert bp.node("charge").params["nested"] == {"k": [1, 2]}


@pytest.mark.parametrize(
    ("data", "version"),
    [
        ({"id": "a", "nodes": []}, "1"),
        ({"id": "a", "version": 7, "nodes": []}, "7"),
        ({"id": "a", "version": "3", "metadata": {"version": "4"}, "nodes": []}, "4"),
        ({"id": "a", "metadata": {"version": " 2.1 "}, "nodes": []}, "2.1"),
    ],
)
def test_version_is_normalised_to_str(data: dict[str, Any], version: str) -> None:
    assert Blueprint.from_dict(data).version == version


def test_round_trip_through_to_dict_and_json() -> None:
    bp = Blueprint.from_dict(ORDER)
    as_dict = bp.to_dict()
    assert as_dict["metadata"] == {"name": "Order flow", "version": "2"}
    assert as_dict["nodes"][0]["config"] == {
        "maxRetries": 2,
        "retryDelay": 500,
        "joinStrategy": "all",
        "timeout": 5000,
        "fallback": "manual",
    }
    assert Blueprint.from_dict(as_dict) == bp
    assert Blueprint.from_dict(json.loads(json.dumps(as_dict))) == bp


def test_round_trip_keeps_durations_that_are_not_whole_milliseconds_exact() -> None:
    cfg = NodeConfig(
        retry_delay_s=0.0001234567, timeout_s=1 / 3, join_strategy="quorum", join_options={"n": 1}
    )
    bp = Blueprint(id="t", nodes=(NodeSpec(id="a", uses="x", config=cfg),))
    assert Blueprint.from_dict(json.loads(json.dumps(bp.to_dict()))) == bp


def test_empty_condition_means_always() -> None:
    bp = Blueprint.from_dict(
        {
            "id": "a",
            "nodes": [{"id": "x", "uses": "u"}, {"id": "y", "uses": "u"}],
            "edges": [{"source": "x", "target": "y", "condition": "  "}],
        }
    )
    assert bp.edges[0].condition is None


def test_build_accepts_specs_and_dicts() -> None:
    bp = Blueprint.build(
        "flow",
        nodes=[NodeSpec(id="a", uses="u"), {"id": "b", "uses": "v", "config": {"timeout": 2000}}],
        edges=[EdgeSpec(source="a", target="b"), {"source": "b", "target": "a"}],
        version=3,
    )
    assert bp.version == "3"
    assert bp.node("b").config.timeout_s == 2.0
    assert [(e.source, e.target) for e in bp.edges] == [("a", "b"), ("b", "a")]


def test_build_rejects_bad_dict_nodes() -> None:
    with pytest.raises(BlueprintError, match=r"node 'b': config\.maxRetries"):
        Blueprint.build("flow", nodes=[{"id": "b", "uses": "v", "config": {"maxRetries": "x"}}])


def test_top_level_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(BlueprintError, match="must be a JSON object"):
        Blueprint.from_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "code", "text"),
    [
        ({"nodes": {"a": 1}}, "bad-field", "'nodes' must be a list"),
        ({"edges": "a->b"}, "bad-field", "'edges' must be a list"),
        ({"id": ""}, "bad-field", "blueprint 'id' must be a non-empty string"),
        ({"metadata": {"version": 1.10}}, "bad-field", "write it as a string"),
        ({"metadata": {"version": True}}, "bad-field", "metadata.version"),
        ({"nodes": [{"id": "", "uses": "u"}]}, "bad-field", "nodes[0].id must be"),
        ({"nodes": ["charge"]}, "bad-field", "nodes[0] must be an object"),
        ({"nodes": [{"id": "n"}]}, "bad-field", "node 'n': 'uses' must be"),
        ({"nodes": [{"id": "n", "uses": "u", "params": [1]}]}, "bad-field", "node 'n': 'params'"),
        ({"nodes": [{"id": "n", "uses": "u", "config": 3}]}, "bad-field", "node 'n': 'config'"),
    ],
)
def test_structural_errors_name_the_field(change: dict[str, Any], code: str, text: str) -> None:
    data = {"id": "order", "nodes": [{"id": "a", "uses": "u"}], **change}
    with pytest.raises(BlueprintError) as info:
        Blueprint.from_dict(data)
    assert code in issue_codes(info.value)
    assert text in str(info.value)


@pytest.mark.parametrize(
    ("config", "code", "text"),
    [
        ({"maxRetries": "3"}, "bad-field", "config.maxRetries must be a positive integer"),
        ({"maxRetries": True}, "bad-field", "config.maxRetries must be a positive integer"),
        ({"maxRetries": 1.5}, "bad-field", "config.maxRetries"),
        ({"maxRetries": 0}, "bad-config", "maxRetries counts attempts in total"),
        ({"maxRetries": -1}, "bad-config", "so it must be at least 1, got -1"),
        ({"retryDelay": "soon"}, "bad-field", "config.retryDelay"),
        ({"retryDelay": -5}, "bad-field", "negative"),
        ({"timeout": "500"}, "bad-field", "has no unit"),
        ({"timeout": 0}, "bad-config", "timeout must be positive"),
        ({"fallback": 3}, "bad-field", "config.fallback must be a non-empty string"),
        ({"joinStrategy": "most"}, "bad-join", "unknown joinStrategy 'most'"),
        ({"joinStrategy": "quorum"}, "bad-quorum", "needs 'n'"),
        ({"joinStrategy": "quorum", "n": 0}, "bad-quorum", "at least 1"),
        ({"joinStrategy": "quorum", "n": "2"}, "bad-field", "config.n must be an integer"),
        ({"n": 2}, "bad-quorum", "only used with joinStrategy 'quorum'"),
        ({"retries": 2}, "unknown-config", "unknown config key 'retries'"),
    ],
)
def test_config_errors_name_node_and_key(config: dict[str, Any], code: str, text: str) -> None:
    with pytest.raises(BlueprintError) as info:
        Blueprint.from_dict({"id": "o", "nodes": [{"id": "pay", "uses": "u", "config": config}]})
    exc = info.value
    assert [i.code for i in exc.issues] == [code]
    assert exc.issues[0].node == "pay"
    assert text in exc.issues[0].message
    assert "node 'pay'" in exc.issues[0].message
    assert str(exc).startswith("blueprint 'o' is invalid:\n  - node 'pay': ")


def test_every_structural_problem_is_reported_at_once() -> None:
    data = {
        "id": "o",
        "nodes": [
            {"id": "a", "uses": "u", "config": {"maxRetries": "x", "colour": "red"}},
            {"id": "b", "uses": ""},
        ],
        "edges": [{"source": "a"}, {"source": "a", "target": "b", "action": 3}],
    }
    with pytest.raises(BlueprintError) as info:
        Blueprint.from_dict(data)
    messages = [i.message for i in info.value.issues]
    assert len(messages) == 5
    assert any("'colour'" in m for m in messages)
    assert any("edges[0].target" in m for m in messages)
    assert any("edge 'a' -> 'b': 'action'" in m for m in messages)
    assert str(info.value).count("\n  - ") == 5


def test_unknown_top_level_and_edge_keys_are_ignored() -> None:
    bp = Blueprint.from_dict(ORDER)
    assert "ui" not in bp.to_dict()


# --- value semantics -------------------------------------------------------------------


def test_equality_and_hash_by_value() -> None:
    a = Blueprint.from_dict(ORDER)
    b = Blueprint.from_dict(json.loads(json.dumps(ORDER)))
    assert a == b
    assert hash(a) == hash(b)
    assert {a: 1}[b] == 1
    changed = json.loads(json.dumps(ORDER))
    changed["nodes"][0]["params"]["amount"] = 4
    assert Blueprint.from_dict(changed) != a


def test_blueprint_is_frozen() -> None:
    bp = Blueprint.from_dict(ORDER)
    with pytest.raises(AttributeError):
        bp.id = "other"  # type: ignore[misc]


def test_pickle_after_analysis_was_computed() -> None:
    bp = Blueprint.from_dict(ORDER)
    assert bp.analysis.start_nodes == ("charge",)
    copy = pickle.loads(pickle.dumps(bp))
    assert copy == bp
    assert copy.analysis == bp.analysis


def test_node_lookup_error_lists_nodes() -> None:
    bp = Blueprint.from_dict(ORDER)
    with pytest.raises(KeyError, match=r"has no node 'nope'; nodes: charge, manual, ship"):
        bp.node("nope")


def test_version_in_metadata_argument_is_not_duplicated() -> None:
    bp = Blueprint(id="a", version="5", nodes=(), metadata={"version": "9", "owner": "x"})
    assert bp.metadata == {"owner": "x"}
    assert bp.to_dict()["metadata"] == {"owner": "x", "version": "5"}


# --- analysis --------------------------------------------------------------------------


def test_analysis_of_a_diamond() -> None:
    bp = Blueprint.build(
        "diamond",
        nodes=[{"id": i, "uses": "u"} for i in ("start", "left", "right", "join")],
        edges=[
            {"source": "start", "target": "left"},
            {"source": "start", "target": "right", "action": "r"},
            {"source": "right", "target": "join"},
            {"source": "left", "target": "join"},
        ],
    )
    a = bp.analysis
    assert a.start_nodes == ("start",)
    assert a.terminal_nodes == ("join",)
    assert a.join_nodes == ("join",)
    assert [e.target for e in a.successors["start"]] == ["left", "right"]
    assert a.successors["join"] == ()
    assert a.predecessors["join"] == ("right", "left")
    assert a.predecessors["start"] == ()
    assert a.fallback_targets == frozenset()
    assert a.reachable == frozenset(bp.node_ids)
    assert a.topological_order == ("start", "left", "right", "join")
    assert bp.analysis is a


def test_analysis_of_a_linear_chain() -> None:
    ids = [f"n{i}" for i in range(5)]
    bp = Blueprint.build(
        "chain",
        nodes=[{"id": i, "uses": "u"} for i in reversed(ids)],
        edges=[{"source": a, "target": b} for a, b in itertools.pairwise(ids)],
    )
    a = bp.analysis
    assert a.start_nodes == ("n0",)
    assert a.terminal_nodes == ("n4",)
    assert a.join_nodes == ()
    assert a.topological_order == tuple(ids)


def test_duplicate_edges_count_one_predecessor() -> None:
    bp = Blueprint.build(
        "dup",
        nodes=[{"id": "a", "uses": "u"}, {"id": "b", "uses": "u"}],
        edges=[{"source": "a", "target": "b", "action": "x"}, {"source": "a", "target": "b"}],
    )
    assert bp.analysis.predecessors["b"] == ("a",)
    assert bp.analysis.join_nodes == ()
    assert len(bp.analysis.successors["a"]) == 2


def test_fallback_targets_are_not_start_nodes_but_are_reachable() -> None:
    bp = Blueprint.build(
        "fb",
        nodes=[
            {"id": "charge", "uses": "u", "config": {"fallback": "manual"}},
            {"id": "manual", "uses": "u", "config": {"fallback": "escalate"}},
            {"id": "escalate", "uses": "u"},
            {"id": "ship", "uses": "u"},
        ],
        edges=[{"source": "charge", "target": "ship"}],
    )
    a = bp.analysis
    assert a.start_nodes == ("charge",)
    assert a.fallback_targets == frozenset({"manual", "escalate"})
    assert a.reachable == frozenset({"charge", "manual", "escalate", "ship"})
    assert a.terminal_nodes == ("manual", "escalate", "ship")


def test_analysis_ignores_dangling_edges() -> None:
    bp = Blueprint.build(
        "d",
        nodes=[{"id": "a", "uses": "u"}],
        edges=[{"source": "a", "target": "ghost"}, {"source": "ghost", "target": "a"}],
    )
    assert bp.analysis.successors["a"] == ()
    assert bp.analysis.start_nodes == ("a",)


# --- durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("1.5s", 1.5),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("2d", 172800.0),
        ("1h30m", 5400.0),
        (" 1m 30s ", 90.0),
        ("0s", 0.0),
        (1500, 1.5),
        (0.5, 0.0005),
        (timedelta(minutes=2), 120.0),
    ],
)
def test_parse_duration(value: Any, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


def test_parse_duration_number_unit() -> None:
    assert parse_duration(3, number_unit="s") == 3.0


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("", "empty"),
        ("5", "has no unit"),
        ("5 weeks", "not understood"),
        ("-5s", "negative"),
        (-1, "negative"),
        (True, "must be a number"),
        (float("inf"), "not finite"),
        ([5], "must be a number"),
    ],
)
def test_parse_duration_errors(value: Any, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        parse_duration(value)


def test_format_duration() -> None:
    assert format_duration(300) == "300s"
    assert format_duration(0.25) == "250ms"
    assert format_duration(1.5) == "1.5s"


# --- loading ---------------------------------------------------------------------------


def test_load_json_and_yaml_files(tmp_path: Path) -> None:
    (tmp_path / "order.json").write_text(json.dumps(ORDER))
    (tmp_path / "b.yaml").write_text(
        "id: b\nmetadata: {version: 3}\nnodes:\n  - id: x\n    uses: u\n"
        "    config: {timeout: 2s, retryDelay: 250}\n"
        "edges: []\n"
    )
    (tmp_path / "notes.txt").write_text("ignored")
    order = load_file(tmp_path / "order.json")
    assert order == Blueprint.from_dict(ORDER)
    b = load_file(tmp_path / "b.yaml")
    assert b.version == "3"
    assert b.node("x").config == NodeConfig(timeout_s=2.0, retry_delay_s=0.25)
    assert [bp.id for bp in load_dir(tmp_path)] == ["b", "order"]


def test_yaml_condition_over_several_lines(tmp_path: Path) -> None:
    text = (
        "id: c\nnodes: [{id: a, uses: u}, {id: b, uses: u}]\n"
        "edges:\n  - source: a\n    target: b\n    condition: |\n"
        "      output.ok\n      && context.flag\n"
    )
    bp = loads(text, format="yaml")
    assert bp.edges[0].condition is not None
    assert "&& context.flag" in bp.edges[0].condition


def test_load_file_errors_name_the_file(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(BlueprintError, match=r"bad\.json: not valid JSON"):
        load_file(bad_json)
    cyclic = tmp_path / "cyclic.yml"
    cyclic.write_text("id: c\nnodes: [{id: a, uses: u}]\nedges: [{source: a, target: a}]\n")
    with pytest.raises(BlueprintError) as info:
        load_file(cyclic)
    assert str(info.value).startswith(f"{cyclic}: blueprint 'c' is invalid:")
    assert issue_codes(info.value) == ["cycle"], "a cycle is its own entry (flowcraft)"
    assert load_file(cyclic, validate=False).id == "c"
    with pytest.raises(BlueprintError, match="unknown blueprint file type"):
        load_file(tmp_path / "x.toml")
    with pytest.raises(BlueprintError, match="cannot read"):
        load_file(tmp_path / "missing.json")


def test_load_dir_reports_every_bad_file_and_duplicates(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(ORDER))
    (tmp_path / "b.json").write_text(json.dumps(ORDER))
    (tmp_path / "c.yaml").write_text("- not a mapping\n")
    with pytest.raises(BlueprintError) as info:
        load_dir(tmp_path)
    text = str(info.value)
    assert "2 blueprint file(s)" in text
    assert "b.json: blueprint 'order' version 2 is also defined in" in text
    assert "c.yaml: a blueprint must be a JSON object" in text
    with pytest.raises(BlueprintError, match="not a directory"):
        load_dir(tmp_path / "nope")


def test_load_with_known_uses_and_delay_limit(tmp_path: Path) -> None:
    path = tmp_path / "order.json"
    path.write_text(json.dumps(ORDER))
    with pytest.raises(BlueprintError) as info:
        load_file(path, known_uses={"charge-card", "ship"}, max_delay_s=4)
    assert issue_codes(info.value) == ["unknown-uses", "delay-too-long"]


# --- errors ----------------------------------------------------------------------------


def test_blueprint_error_lists_issues() -> None:
    exc = BlueprintError(
        "blueprint 'order' is invalid",
        [
            ValidationIssue("unknown-uses", "node 'charge': unknown uses 'x'", node="charge"),
            ValidationIssue("cycle", "node 'a': cycle a -> b -> a", node="a"),
        ],
    )
    assert str(exc) == (
        "blueprint 'order' is invalid:\n"
        "  - node 'charge': unknown uses 'x'\n"
        "  - node 'a': cycle a -> b -> a"
    )
    assert str(BlueprintError("plain")) == "plain"
    assert BlueprintError("plain").issues == ()


def test_condition_error_is_a_blueprint_error() -> None:
    exc = ConditionError("a &&", "syntax error: invalid syntax")
    assert isinstance(exc, BlueprintError)
    assert str(exc) == "condition 'a &&' is invalid: syntax error: invalid syntax"
    assert (exc.expression, exc.problem) == ("a &&", "syntax error: invalid syntax")


def test_unknown_blueprint_and_node_messages() -> None:
    assert str(UnknownBlueprintError("x", "2", ["b", "a"])) == (
        "unknown blueprint 'x' (version 2); registered: a, b"
    )
    assert str(UnknownBlueprintError("x", None, [])) == "unknown blueprint 'x'; registered: none"
    exc = UnknownNodeError("charge-card", ["ship", "bill"])
    assert "no node registered for uses 'charge-card'; registered: bill, ship" in str(exc)
    assert "@node('charge-card')" in str(exc)


def test_node_error_retry_options() -> None:
    assert NodeError("boom").retryable is True
    assert NodeError("boom").delay_s is None
    exc = NodeError("card declined", retryable=False, delay=timedelta(seconds=90))
    assert (exc.retryable, exc.delay_s, str(exc)) == (False, 90.0, "card declined")
    assert NodeError("x", delay=2).delay_s == 2.0
    with pytest.raises(ValueError, match="negative"):
        NodeError("x", delay=-1)


@pytest.mark.parametrize(
    "exc",
    [
        BlueprintError("bad", [ValidationIssue("cycle", "node 'a': cycle", node="a")]),
        ConditionError("a &&", "syntax error"),
        UnknownBlueprintError("x", "2", ["a"]),
        UnknownNodeError("u", ["v"]),
        NodeError("no", retryable=False, delay=3),
    ],
)
def test_errors_survive_pickling(exc: Exception) -> None:
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert copy.__dict__ == exc.__dict__


def test_error_tree() -> None:
    from state.errors import FlowbridgeError

    for cls in (BlueprintError, UnknownBlueprintError, UnknownNodeError, NodeError):
        assert issubclass(cls, FlowbridgeError)


def test_public_surface_is_pinned() -> None:
    assert sorted(blueprint_pkg.__all__) == [
        "Analysis",
        "BUILTIN_USES",
        "Blueprint",
        "CONDITION_NAMES",
        "Condition",
        "EdgeSpec",
        "JOIN_STRATEGIES",
        "Loop",
        "Names",
        "NodeConfig",
        "NodeSpec",
        "ValidationIssue",
        "analyze",
        "check",
        "compile_condition",
        "condition_scope",
        "format_duration",
        "load_dir",
        "load_dirs",
        "load_file",
        "loads",
        "parse_duration",
        "validate",
    ]
    assert sorted(errors_mod.__all__) == [
        "AppImportError",
        "BlueprintError",
        "ConditionError",
        "NodeError",
        "NodeFailedError",
        "ResumeError",
        "RetryError",
        "UnknownBlueprintError",
        "UnknownNodeError",
        "WORKFLOW_RETRY",
    ]
    for name in blueprint_pkg.__all__:
        assert hasattr(blueprint_pkg, name)


def test_a_misspelt_key_is_named_with_the_key_it_may_mean() -> None:
    bp, issues = Blueprint.parse(
        {
            "id": "typos",
            "nodes": [{"id": "a", "usse": "echo", "config": {"maxRetry": 1}}],
            "edges": [{"sorce": "a", "target": "a"}],
        }
    )
    messages = [i.message for i in issues]
    assert messages == [
        "node 'a': 'uses' must be a non-empty string, got None (is 'usse' a typo of 'uses'?)",
        "node 'a': unknown config key 'maxRetry' (did you mean 'maxRetries'?)",
        "edges[0].source must be a non-empty string, got None (is 'sorce' a typo of 'source'?)",
    ]
    assert bp is not None and bp.node_ids == ("a",), "the node is kept for the graph checks"
