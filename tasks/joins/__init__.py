"""Join strategies by name: what a ``joinStrategy`` value means, in one place each.

Add a strategy by subclassing ``JoinStrategy`` in a module of this package
and registering it below: validation (its name, its options and their checks),
the decision on an arrival set, whether it tolerates failed branches, cancels
losers or may run as a Celery chord all come from that one class.
"""

from __future__ import annotations

from tasks.joins.base import Arrivals, Decision, JoinOption, JoinStrategy
from tasks.joins.every import AllJoin, AllSettledJoin
from tasks.joins.first import AnyJoin, QuorumJoin, RaceJoin

__all__ = [
    "DEFAULT_JOIN",
    "Arrivals",
    "Decision",
    "JoinOption",
    "JoinStrategy",
    "issue_codes",
    "join_strategies",
    "join_strategy",
    "option_keys",
    "register_join",
]

#: The strategy of a join node whose config names none.
DEFAULT_JOIN = "all"

_strategies: dict[str, JoinStrategy] = {}


def register_join(strategy: JoinStrategy) -> JoinStrategy:
    """Make ``strategy`` available under its ``name``."""
    if strategy.name in _strategies and type(_strategies[strategy.name]) is not type(strategy):
        raise ValueError(f"join strategy {strategy.name!r} is registered already")
    _strategies[strategy.name] = strategy
    return strategy


def join_strategy(name: str) -> JoinStrategy:
    """The strategy called ``name``.

    Raises:
        KeyError: no such strategy (the message lists the known ones).
    """
    try:
        return _strategies[name]
    except KeyError:
        raise KeyError(
            f"unknown joinStrategy {name!r} (use one of {', '.join(_strategies)})"
        ) from None


def join_strategies() -> tuple[str, ...]:
    """Every registered name, in registration order."""
    return tuple(_strategies)


def option_keys() -> dict[str, JoinOption]:
    """Every ``config`` key some strategy reads, with its declaration."""
    return {o.key: o for s in _strategies.values() for o in s.options}


def issue_codes() -> frozenset[str]:
    """The validation issue codes of join problems (``bad-join`` and the options' own)."""
    return frozenset({"bad-join", *(o.issue for o in option_keys().values())})


for _strategy in (AllJoin(), AllSettledJoin(), AnyJoin(), RaceJoin(), QuorumJoin()):
    register_join(_strategy)
