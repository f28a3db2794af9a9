"""Built-in nodes by ``uses`` name: flowcraft's built-ins, each in one place.

Add one by subclassing ``Builtin`` in a module of this package and listing it
below; validation then knows its name and params, and the engine runs it
instead of a registered user function (a user's ``@node`` of the same name wins).
"""

from __future__ import annotations

from tasks.builtins.base import (
    RESUME_EVENT_ID,
    Builtin,
    BuiltinCall,
    BuiltinResult,
    ChildRun,
    duration_param,
    resumed,
)
from tasks.builtins.batch import GATHER_USES, SCATTER_USES, BatchGather, BatchScatter, window_of
from tasks.builtins.flow import LoopController, Subflow, Webhook, child_event
from tasks.builtins.timers import Sleep, Wait, resume_name

__all__ = [
    "GATHER_USES",
    "RESUME_EVENT_ID",
    "SCATTER_USES",
    "Builtin",
    "BuiltinCall",
    "BuiltinResult",
    "ChildRun",
    "builtin",
    "builtin_names",
    "child_event",
    "duration_param",
    "resume_name",
    "resumed",
    "window_of",
]

_builtins: dict[str, Builtin] = {
    b.uses: b
    for b in (
        Sleep(),
        Wait(),
        Webhook(),
        Subflow(),
        BatchScatter(),
        BatchGather(),
        LoopController(),
    )
}


def builtin(uses: str) -> Builtin | None:
    """The built-in node called ``uses``, if there is one."""
    return _builtins.get(uses)


def builtin_names() -> frozenset[str]:
    """Every built-in ``uses`` name."""
    return frozenset(_builtins)
