"""Built-in nodes by ``uses`` name: flowbridge's own nodes, each in one place.

Add one by subclassing ``Builtin`` in a module of this package and listing it
below; validation then knows its name and the engine runs it instead of a
registered user function (a user's ``@node`` of the same name wins).
"""

from __future__ import annotations

from tasks.builtins.base import Builtin, BuiltinCall, BuiltinResult, duration_param
from tasks.builtins.timers import Sleep, Wait

__all__ = [
    "Builtin",
    "BuiltinCall",
    "BuiltinResult",
    "builtin",
    "builtin_names",
    "duration_param",
]

_builtins: dict[str, Builtin] = {b.uses: b for b in (Sleep(), Wait())}


def builtin(uses: str) -> Builtin | None:
    """The built-in node called ``uses``, if there is one."""
    return _builtins.get(uses)


def builtin_names() -> frozenset[str]:
    """Every built-in ``uses`` name."""
    return frozenset(_builtins)
