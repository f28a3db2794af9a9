"""The expression language's machinery: JavaScript rewritten as Python, then compiled safely.

``normalise`` tokenizes an expression (text inside string literals is never
rewritten) and maps JS operators and literals to Python's; ``compile_tree``
turns the parsed AST into nested closures, refusing every construct outside
the whitelist ``tasks.blueprint.conditions`` documents.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tasks.errors import ConditionError

__all__ = ["MAX_CONDITION_DEPTH", "Eval", "compile_tree", "normalise"]

MAX_CONDITION_DEPTH = 32

Eval = Callable[[Mapping[str, Any]], Any]

_JS_WORDS = {"true": "True", "false": "False", "null": "None", "undefined": "None"}
_JS_OPS = {"===": "==", "!==": "!=", "&&": " and ", "||": " or ", "?.": "."}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


_TOKEN = re.compile(
    r"""\s+|'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^\W\d]\w*|\d[\w.]*|\.\d\w*"""
    r"|===|!==|==|!=|<=|>=|&&|\|\||\?\.|."
)
_CLOSING = {"(": ")", "[": "]", "{": "}"}


def normalise(expr: str) -> str:
    """Rewrite JS operators and literals into Python, leaving string literals untouched."""
    return "".join(_translate(_TOKEN.findall(expr)))


def _translate(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "!":
            # JS `!` binds tighter than comparisons (`!a == b` is `(!a) == b`), so wrap
            # exactly its operand; Python's `not` alone would negate the whole comparison.
            end = _operand_end(tokens, i + 1)
            out += ["(not ", *_translate(tokens[i + 1 : end]), ")"]
            i = end
            continue
        if tok.isspace():
            out.append(" ")  # YAML block scalars may break a condition over lines
        elif tok == "?." and _next_is(tokens, i + 1, ("[", "(")):
            pass  # ``a?.[k]`` is ``a[k]``: paths are null-safe already
        elif tok in _JS_OPS:
            out.append(_JS_OPS[tok])
        elif tok in _JS_WORDS and _previous(tokens, i) != ".":
            out.append(_JS_WORDS[tok])
        else:
            out.append(tok)
        i += 1
    return out


def _previous(tokens: list[str], i: int) -> str:
    for tok in reversed(tokens[:i]):
        if not tok.isspace():
            return tok
    return ""


def _next_is(tokens: list[str], i: int, options: tuple[str, ...]) -> bool:
    j = _next_significant(tokens, i)
    return j < len(tokens) and tokens[j] in options


def _next_significant(tokens: list[str], i: int) -> int:
    while i < len(tokens) and tokens[i].isspace():
        i += 1
    return i


def _matching(tokens: list[str], i: int) -> int:
    """Index just past the bracket that closes ``tokens[i]`` (or the end)."""
    stack = [_CLOSING[tokens[i]]]
    i += 1
    while i < len(tokens) and stack:
        if tokens[i] in _CLOSING:
            stack.append(_CLOSING[tokens[i]])
        elif tokens[i] == stack[-1]:
            stack.pop()
        i += 1
    return i


def _operand_end(tokens: list[str], i: int) -> int:
    """Index just past the primary expression (with its `.x`, `[k]`, `(...)`) starting at ``i``."""
    i = _next_significant(tokens, i)
    while i < len(tokens) and tokens[i] in ("!", "-", "+"):
        i = _next_significant(tokens, i + 1)
    if i >= len(tokens):
        return i
    end = _matching(tokens, i) if tokens[i] in _CLOSING else i + 1
    while True:
        j = _next_significant(tokens, end)
        if j < len(tokens) and tokens[j] in (".", "?."):
            k = _next_significant(tokens, j + 1)
            end = k + 1 if k < len(tokens) else k
        elif j < len(tokens) and tokens[j] in ("[", "("):
            end = _matching(tokens, j)
        else:
            return end


def _safe_compare(op: Callable[[Any, Any], Any], left: Any, right: Any) -> bool:
    try:
        return bool(op(left, right))
    except (TypeError, ValueError):
        return False


def _lookup(container: Any, key: Any) -> Any:
    if isinstance(container, Mapping):
        try:
            return container.get(key)
        except TypeError:  # unhashable key
            return None
    if isinstance(container, Sequence) and not isinstance(key, bool) and isinstance(key, int):
        try:
            return container[key]
        except IndexError:
            return None
    return None


class _Compiler:
    """Turns a whitelisted AST into nested closures; rejects everything else."""

    def __init__(self, expr: str, names: set[str]) -> None:
        self.expr = expr
        self.names = names

    def fail(self, problem: str) -> ConditionError:
        return ConditionError(self.expr, problem)

    def build(self, node: ast.expr, depth: int) -> Eval:
        if depth > MAX_CONDITION_DEPTH:
            raise self.fail(f"nested more than {MAX_CONDITION_DEPTH} levels deep")
        d = depth + 1
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.BoolOp):
            parts = [self.build(v, d) for v in node.values]
            return _bool_op(parts, stop_when=not isinstance(node.op, ast.And))
        if isinstance(node, ast.UnaryOp):
            return self._unary(node, d)
        if isinstance(node, ast.Compare):
            return self._compare(node, d)
        if isinstance(node, ast.BinOp):
            return self._arithmetic(node, d)
        if isinstance(node, ast.Attribute):
            return self._attribute(node, d)
        if isinstance(node, ast.Subscript):
            return self._subscript(node, d)
        if isinstance(node, ast.List | ast.Tuple):
            items = [self.build(e, d) for e in node.elts]
            as_list = isinstance(node, ast.List)
            return lambda ns: (list if as_list else tuple)(f(ns) for f in items)
        raise self.fail(f"{_describe(node)} is not allowed in a condition")

    def _constant(self, node: ast.Constant) -> Eval:
        value = node.value
        if value is not None and not isinstance(value, str | int | float | bool):
            raise self.fail(f"literal {value!r} is not allowed (use strings, numbers, booleans)")
        return lambda _ns: value

    def _name(self, node: ast.Name) -> Eval:
        name = node.id
        if name.startswith("_"):
            raise self.fail(f"name {name!r} is not allowed (names starting with '_' are private)")
        self.names.add(name)
        return lambda ns: ns.get(name)

    def _unary(self, node: ast.UnaryOp, depth: int) -> Eval:
        inner = self.build(node.operand, depth)
        if isinstance(node.op, ast.Not):
            return lambda ns: not inner(ns)
        if isinstance(node.op, ast.USub | ast.UAdd):
            sign = -1 if isinstance(node.op, ast.USub) else 1

            def signed(ns: Mapping[str, Any]) -> Any:
                value = inner(ns)
                is_number = isinstance(value, int | float) and not isinstance(value, bool)
                return sign * value if is_number else None

            return signed
        raise self.fail(f"operator {_describe(node.op)} is not allowed in a condition")

    def _compare(self, node: ast.Compare, depth: int) -> Eval:
        ops: list[Callable[[Any, Any], Any]] = []
        for op in node.ops:
            fn = _COMPARE.get(type(op))
            if fn is None:
                raise self.fail(f"comparison {_describe(op)} is not allowed (use == or !=)")
            ops.append(fn)
        left = self.build(node.left, depth)
        rights = [self.build(c, depth) for c in node.comparators]

        def compare(ns: Mapping[str, Any]) -> bool:
            a = left(ns)
            for op, right in zip(ops, rights, strict=True):
                b = right(ns)
                if not _safe_compare(op, a, b):
                    return False
                a = b
            return True

        return compare

    def _arithmetic(self, node: ast.BinOp, depth: int) -> Eval:
        op = _ARITHMETIC.get(type(node.op))
        if op is None:
            raise self.fail(f"operator {_describe(node.op)} is not allowed (use + - * / %)")
        left = self.build(node.left, depth)
        right = self.build(node.right, depth)
        return lambda ns: op(left(ns), right(ns))

    def _attribute(self, node: ast.Attribute, depth: int) -> Eval:
        attr = node.attr
        if attr.startswith("_"):
            raise self.fail(f"attribute {attr!r} is not allowed (names starting with '_')")
        inner = self.build(node.value, depth)

        def get(ns: Mapping[str, Any]) -> Any:
            value = inner(ns)
            if isinstance(value, Mapping):
                return value.get(attr)
            if attr == "length" and isinstance(value, Sequence):
                return len(value)
            return None

        return get

    def _subscript(self, node: ast.Subscript, depth: int) -> Eval:
        key_node = node.slice
        if isinstance(key_node, ast.UnaryOp) and isinstance(key_node.op, ast.USub):
            operand = key_node.operand
            if isinstance(operand, ast.Constant) and type(operand.value) is int:
                key_node = ast.Constant(-operand.value)
        if not isinstance(key_node, ast.Constant) or not isinstance(key_node.value, str | int):
            raise self.fail(
                f"only a literal key is allowed in a subscript, like a['key'] or a[0], "
                f"not {_describe(node.slice)}"
            )
        key = key_node.value
        inner = self.build(node.value, depth)
        return lambda ns: _lookup(inner(ns), key)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _js_text(value: Any) -> str | None:
    """How JavaScript's ``+`` writes a value into a string (None: not a JSON scalar)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if _number(value):
        return str(value)
    return None


def _add(a: Any, b: Any) -> Any:
    if _number(a) and _number(b):
        return a + b
    if isinstance(a, str) or isinstance(b, str):
        left, right = _js_text(a), _js_text(b)
        return None if left is None or right is None else left + right
    return None


def _numeric(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def run(a: Any, b: Any) -> Any:
        if not (_number(a) and _number(b)):
            return None
        try:
            return fn(a, b)
        except (ZeroDivisionError, OverflowError):
            return None  # JS's Infinity and NaN are not JSON values

    return run


_ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: _add,
    ast.Sub: _numeric(operator.sub),
    ast.Mult: _numeric(operator.mul),
    ast.Div: _numeric(operator.truediv),
    ast.Mod: _numeric(operator.mod),
}


def _bool_op(parts: list[Eval], *, stop_when: bool) -> Eval:
    # Python's and/or: return the first operand whose truth is ``stop_when``, else the last.
    def run(ns: Mapping[str, Any]) -> Any:
        value: Any = None
        for part in parts:
            value = part(ns)
            if bool(value) is stop_when:
                return value
        return value

    return run


_DESCRIPTIONS: dict[type[ast.AST], str] = {
    ast.Call: "a function call",
    ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.JoinedStr: "an f-string",
    ast.NamedExpr: "an assignment (:=)",
    ast.Pow: "'**'",
    ast.FloorDiv: "'//'",
    ast.BitAnd: "'&'",
    ast.BitOr: "'|'",
    ast.BitXor: "'^'",
    ast.LShift: "'<<'",
    ast.RShift: "'>>'",
    ast.MatMult: "'@'",
    ast.IfExp: "a conditional expression (x if c else y)",
    ast.Dict: "a dict literal",
    ast.Set: "a set literal",
    ast.Slice: "a slice",
    ast.Name: "a variable",
    ast.Attribute: "a variable",
    ast.Subscript: "a variable",
    ast.Starred: "unpacking (*)",
    ast.Await: "await",
    ast.Is: "'is'",
    ast.IsNot: "'is not'",
    ast.Invert: "'~'",
}


def _describe(node: ast.AST) -> str:
    return _DESCRIPTIONS.get(type(node), f"'{type(node).__name__}'")


def compile_tree(expr: str, tree: ast.expr, names: set[str]) -> Eval:
    """The closure evaluating ``tree`` (parsed from ``expr``); the names it reads go to ``names``.

    Raises:
        ConditionError: the tree uses a construct the language forbids.
    """
    return _Compiler(expr, names).build(tree, 1)
