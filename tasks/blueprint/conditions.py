"""Edge conditions and transforms: a small, safe expression language evaluated without ``eval``.

An expression is JavaScript- or Python-style, such as ``route.total < 500 &&
context.vip == true`` or ``input * 2``. It is tokenized (so text inside string
literals is never rewritten), JS operators are mapped to Python ones (``&&``,
``||``, ``!``, ``===``, ``!==``, ``?.``, ``true``/``false``/``null``/``undefined``),
parsed with ``ast.parse`` and checked against a whitelist: boolean operators,
``not``/unary ``-``/``+``, comparisons (``== != < <= > >= in`` ``not in``),
arithmetic (``+ - * / %``), literals (str, int, float, bool, None, lists,
tuples), names, attribute access and subscripts with a literal key. Calls,
comprehensions, lambdas, f-strings and the like are rejected when it is compiled.

What a name means is the caller's: the engine evaluates a condition over the
run's scope as flowcraft does (``docs/blueprints.md``): ``result`` (the node's
``{output, action}``), then each completed node's output under its id, then
the run context's keys, then ``context`` (that whole view) and flowbridge's
``output`` and ``action``. ``Names`` builds such a layered, lazily loaded scope.

``a.b`` and ``a["b"]`` look a key up in a mapping (``a?.b`` is the same: a
missing hop is None anyway), ``a[0]`` indexes a list; a missing name, key or
index gives None (attributes of other objects are never read). ``x.length`` is
the length of a list or string, as in JavaScript. Comparing incompatible
values (``None > 3``) is False and arithmetic on them is None, never an error.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.blueprint.expressions import MAX_CONDITION_DEPTH, Eval, compile_tree, normalise
from tasks.errors import ConditionError

__all__ = [
    "CONDITION_NAMES",
    "MAX_CONDITION_DEPTH",
    "MAX_CONDITION_LENGTH",
    "Condition",
    "Names",
    "compile_condition",
    "condition_scope",
]

#: The names the engine always defines in a condition; every other name is a node id or a
#: context key (a name that is neither is None).
CONDITION_NAMES = frozenset({"result", "context", "output", "action"})
MAX_CONDITION_LENGTH = 2000


@dataclass(frozen=True)
class Condition:
    """A compiled expression; ``evaluate`` maps the names to a bool, ``value`` to its value."""

    source: str
    names: frozenset[str]
    _fn: Eval = field(repr=False, compare=False)

    def evaluate(self, names: Mapping[str, Any]) -> bool:
        """Evaluate as a condition against ``names``; never raises for data shapes."""
        return bool(self._fn(names))

    def value(self, names: Mapping[str, Any]) -> Any:
        """Evaluate as a transform: the expression's value (None where data is missing)."""
        return self._fn(names)


Layer = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


class Names(Mapping[str, Any]):
    """A scope of layered names: the first layer that has a name gives its value.

    A layer is a mapping, or a function returning one, called the first time
    the scope is read (so a condition that reads only ``result`` loads nothing).
    """

    def __init__(self, *layers: Layer) -> None:
        """Look names up in ``layers``, first to last."""
        self._layers = list(layers)
        self._loaded: list[Mapping[str, Any] | None] = [None] * len(layers)

    def _layer(self, i: int) -> Mapping[str, Any]:
        loaded = self._loaded[i]
        if loaded is None:
            layer = self._layers[i]
            loaded = layer() if callable(layer) else layer
            self._loaded[i] = loaded
        return loaded

    def __getitem__(self, key: str) -> Any:
        for i in range(len(self._layers)):
            layer = self._layer(i)
            if key in layer:
                return layer[key]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return any(key in self._layer(i) for i in range(len(self._layers)))

    def __iter__(self) -> Iterator[str]:
        seen: dict[str, None] = {}
        for i in range(len(self._layers)):
            seen.update(dict.fromkeys(self._layer(i)))
        return iter(seen)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def condition_scope(
    *,
    output: Any,
    action: str | None,
    outputs: Layer | None = None,
    context: Layer | None = None,
) -> Names:
    """The names a condition on a node's result sees, in flowcraft's order.

    ``result`` wins, then node outputs by id (``outputs``), then the run
    context's keys, then ``context`` (outputs and context together, as
    flowcraft's evaluator binds it) and flowbridge's ``output`` and ``action``.
    """
    view = Names(outputs or {}, context or {})
    return Names(
        {"result": {"output": output, "action": action}},
        view,
        {"context": view, "output": output, "action": action},
    )


@functools.lru_cache(maxsize=2048)
def compile_condition(expr: str) -> Condition:
    """Compile ``expr`` into a ``Condition`` (cached by source text).

    Raises:
        ConditionError: the expression does not parse or uses a forbidden construct.
    """
    if not isinstance(expr, str):
        raise ConditionError(repr(expr), f"a condition must be a string, not {type(expr).__name__}")
    if len(expr) > MAX_CONDITION_LENGTH:
        raise ConditionError(expr, f"longer than {MAX_CONDITION_LENGTH} characters")
    if not expr.strip():
        raise ConditionError(expr, "empty expression")
    try:
        tree = ast.parse(normalise(expr).strip(), mode="eval")
    except SyntaxError as exc:
        raise ConditionError(expr, f"syntax error: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ConditionError(expr, "nested too deeply") from None
    except ValueError as exc:  # e.g. a NUL character
        raise ConditionError(expr, f"cannot be parsed: {exc}") from None
    names: set[str] = set()
    fn = compile_tree(expr, tree.body, names)
    return Condition(source=expr, names=frozenset(names), _fn=fn)
