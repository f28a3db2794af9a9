"""The expression language of conditions and transforms: operators, JS syntax, missing data,
the run's scope (flowcraft's names), and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.blueprint import CONDITION_NAMES, compile_condition, condition_scope
from tasks.blueprint.conditions import MAX_CONDITION_LENGTH, Names
from tasks.errors import ConditionError

SCOPE: dict[str, Any] = condition_scope(
    output={
        "total": 12.5,
        "status": "paid",
        "items": [{"sku": "A1", "qty": 2}, {"sku": "B2", "qty": 0}],
        "tags": ["gift", "express"],
        "flags": {"fraud": False, "_id": "x1"},
        "empty": None,
    },
    action="approved",
    outputs={"route": {"total": 1665}, "check": {"ok": True}},
    context={"vip": True, "tier": 2, "region": "eu", "country": "DE", "limit": 10, "route": 0},
)


def ev(expr: str, names: dict[str, Any] | None = None) -> bool:
    return compile_condition(expr).evaluate(SCOPE if names is None else names)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("output.total > 10", True),
        ("output.total >= 12.5", True),
        ("output.total < 12.5", False),
        ("output.total <= 12.5 and output.status == 'paid'", True),
        ("output.status != 'paid' or context.vip", True),
        ("not context.vip", False),
        ("context.tier in [1, 2]", True),
        ("context.tier not in (1, 2)", False),
        ("'gift' in output.tags", True),
        ("'ai' in 'paid'", True),
        ("1 < context.tier < 3", True),
        ("1 < context.tier < 2", False),
        ("output.items[0].sku == 'A1'", True),
        ("output.items[-1]['qty'] == 0", True),
        ("output['flags']['fraud'] == False", True),
        ("output.flags['_id'] == 'x1'", True),
        ("result.action == 'approved' and result.output.total > 1", True),
        ("action == 'approved'", True),
        ("country == 'DE' and output.total > limit", True),
        ("context.country == 'DE' and context.limit == 10", True),
        ("route.total >= 500 && route.total <= 2000", True),
        ("context.route.total == 1665", True),
        ("check?.ok && route?.['total'] > 1", True),
        ("output.total * 2 > 20", True),
        ("output.total + 0.5 == 13", True),
        ("output.items[0].qty - 2 == 0", True),
        ("limit / 4 == 2.5 && limit % 3 == 1", True),
        ("output.status + '!' == 'paid!'", True),
        ("'n=' + limit == 'n=10'", True),
        ("limit / 0", False),
        ("output.empty + 1", False),
        ("output.tags * 2", False),
        ("-output.total < 0", True),
        ("+context.tier == 2", True),
        ("output.tags.length == 2", True),
        ("output.status.length == 4", True),
        ("output.total", True),
        ("output.empty", False),
        ("[]", False),
        ("'text'", True),
    ],
)
def test_operators(expr: str, expected: bool) -> None:
    assert ev(expr) is expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("output.total > 10 && context.vip == true", True),
        ("output.total > 100 || context.vip === true", True),
        ("output.status !== 'paid'", False),
        ("output.empty === null", True),
        ("output.missing == undefined", True),
        ("!context.vip", False),
        ("!output.flags.fraud && !output.empty", True),
        ("!!context.vip", True),
        ("!(output.total > 100 || false)", True),
        # JS: `!` binds tighter than `==`, so this is (!vip) == false.
        ("!context.vip == false", True),
        ("output.total != !context.vip", True),
        ("output.items[1].qty == 0 && !output.items[1]['qty']", True),
    ],
)
def test_js_style_syntax(expr: str, expected: bool) -> None:
    assert ev(expr) is expected


def test_strings_containing_operators_are_untouched() -> None:
    names = {"output": {"text": "a && b || !c === true"}}
    assert ev("output.text == 'a && b || !c === true'", names) is True
    assert ev('output.text == "a && b || !c === true" && true', names) is True
    assert ev("output.text == 'a and b'", names) is False
    escaped = {"output": {"text": 'it\'s && "q"'}}
    assert ev(r"output.text == 'it\'s && \"q\"'", escaped) is True


def test_attribute_named_like_a_js_literal() -> None:
    assert ev("output.true == 1 && output.null == 2", {"output": {"true": 1, "null": 2}}) is True


@pytest.mark.parametrize(
    "expr",
    [
        "output.missing.deeper == 1",
        "output.items[5].sku == 'A1'",
        "output.items['x'] == 1",
        "output.total.value == 1",
        "nothing.here",
        "context.absent",
        "output.empty > 3",
        "output.empty < 3",
        "output.status > 3",
        "3 in output.total",
        "[1] in output.flags",
        "-output.status == -1",
    ],
)
def test_missing_paths_and_incompatible_types_are_false(expr: str) -> None:
    assert ev(expr) is False


def test_missing_paths_compare_equal_to_null() -> None:
    assert ev("output.missing.deeper == null") is True
    assert ev("nothing == None") is True
    assert ev("output.items[9] === null && !output.items[9]") is True


def test_no_attributes_of_python_objects_are_read() -> None:
    class Secret:
        password = "hunter2"

    names = {"output": Secret(), "context": {"obj": Secret()}}
    assert ev("output.password == 'hunter2'", names) is False
    assert ev("context.obj.password == 'hunter2'", names) is False
    assert ev("output.password == null", names) is True


@pytest.mark.parametrize(
    ("expr", "construct"),
    [
        ("__import__('os')", "a function call"),
        ("open('f')", "a function call"),
        ("output.keys()", "a function call"),
        ("(lambda: 1)()", "a function call"),
        ("lambda: 1", "a lambda"),
        ("[x for x in y]", "a comprehension"),
        ("{x for x in y}", "a comprehension"),
        ("any(x for x in y)", "a function call"),
        ("f'{output}'", "an f-string"),
        ("(x := 1)", "an assignment (:=)"),
        ("output.total ** 2 > 10", "'**'"),
        ("output.total // 2", "'//'"),
        ("1 if output else 2", "a conditional expression"),
        ("{'a': 1}", "a dict literal"),
        ("{1, 2}", "a set literal"),
        ("output[1:2]", "a slice"),
        ("output[context.key]", "a variable"),
        ("output is None", "'is'"),
        ("~output.total", "'~'"),
        ("b'raw' == output", "literal b'raw'"),
        ("output == ...", "literal Ellipsis"),
        ("output.__class__", "attribute '__class__'"),
        ("output._private", "attribute '_private'"),
        ("_secret == 1", "name '_secret'"),
        ("context.vip.__class__.__bases__", "attribute '__bases__'"),
    ],
)
def test_forbidden_constructs_are_rejected(expr: str, construct: str) -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition(expr)
    assert construct in str(info.value)
    assert repr(expr) in str(info.value)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("output.total >", "syntax error"),
        ("import os", "syntax error"),
        ("a = 1", "syntax error"),
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("'unterminated", "syntax error"),
        ("output.total > 1\0", "null bytes"),
        ("x" * (MAX_CONDITION_LENGTH + 1), f"longer than {MAX_CONDITION_LENGTH} characters"),
        ("!" * 1500 + "x", "nested too deeply"),
        ("not " * 100 + "x", "nested more than"),
        ("-" * 500 + "1", "nested"),
        ("a" + "[0]" * 100, "nested more than"),
    ],
)
def test_unparseable_or_too_complex(expr: str, problem: str) -> None:
    with pytest.raises(ConditionError, match=problem.replace("(", r"\(")):
        compile_condition(expr)


def test_compiled_conditions_are_cached_and_report_their_names() -> None:
    first = compile_condition("output.ok && context.flag || input.x == 1")
    assert compile_condition("output.ok && context.flag || input.x == 1") is first
    assert first.names == frozenset({"output", "context", "input"})
    assert first.source == "output.ok && context.flag || input.x == 1"


def test_the_scope_is_flowcraft_s_result_then_node_ids_then_context() -> None:
    scope = condition_scope(
        output=1,
        action=None,
        outputs={"a": "node a", "result": "a node called result"},
        context={"a": "key a", "b": 2, "context": "a key called context", "output": "key"},
    )
    assert set(CONDITION_NAMES) <= set(scope)
    assert scope["result"] == {"output": 1, "action": None}, "result is the node's result"
    assert scope["a"] == "node a", "a node's output shadows a context key of its name"
    assert scope["b"] == 2
    assert scope["context"] == "a key called context", "as flowcraft: a key wins over the name"
    assert scope["output"] == "key", "flowbridge's output and action come last"
    assert "missing" not in scope
    plain = condition_scope(output=1, action="go", outputs={"n": 3}, context={"k": 1})
    assert dict(plain["context"]) == {"n": 3, "k": 1}
    assert compile_condition("result.action == 'go' && context.k == 1 && n == 3").evaluate(plain)


def test_layers_are_loaded_only_when_a_name_needs_them() -> None:
    loads: list[str] = []

    def outputs() -> dict[str, Any]:
        loads.append("outputs")
        return {"a": 1}

    scope = condition_scope(output={"ok": True}, action=None, outputs=outputs, context={})
    assert compile_condition("result.output.ok").evaluate(scope)
    assert loads == []
    assert compile_condition("a == 1").evaluate(scope)
    assert compile_condition("a == 1 && a").evaluate(scope)
    assert loads == ["outputs"]


def test_a_transform_s_value_is_the_expression_s_value() -> None:
    names = Names({"input": 10, "context": {"deep": {"x": [1, 2]}}})
    assert compile_condition("input * 2").value(names) == 20
    assert compile_condition("context.deep.x").value(names) == [1, 2]
    assert compile_condition("context.deep.missing").value(names) is None


def test_evaluate_returns_a_real_bool() -> None:
    value = compile_condition("output.status or 'fallback'").evaluate(SCOPE)
    assert value is True
    assert compile_condition("output.empty and 1").evaluate(SCOPE) is False
