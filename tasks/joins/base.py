"""What a join strategy is: its blueprint options, its decision, and how it treats branches.

A strategy is pure: it decides from the join's options and the arrival set
the state store holds (predecessor id to outcome). The engine fires a join only
through the store's one conditional write, whatever the strategy says, so a
strategy never has to care about duplicates or concurrency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from state.constants import ARRIVAL_COMPLETED, ARRIVAL_FAILED, ARRIVAL_SKIPPED

__all__ = ["Arrivals", "Decision", "JoinOption", "JoinStrategy"]


@dataclass(frozen=True)
class Decision:
    """What a join does with the arrivals it has."""

    action: Literal["wait", "fire", "skip", "fail"]
    reason: str = ""


@dataclass(frozen=True)
class JoinOption:
    """A ``config`` key a strategy reads (e.g. quorum's ``n``)."""

    key: str
    #: What the blueprint must give: ``int`` (a JSON integer) or ``str``.
    kind: type
    doc: str
    #: The validation issue code of problems with this option.
    issue: str = "bad-join"


@dataclass(frozen=True)
class Arrivals:
    """A join's arrival set, next to how many predecessors it has."""

    join_id: str
    #: Every predecessor of the join, in blueprint order.
    predecessors: tuple[str, ...]
    #: Predecessor id to ``completed``, ``failed`` or ``skipped`` (only predecessors).
    outcomes: Mapping[str, str]

    @property
    def completed(self) -> int:
        """How many branches completed."""
        return sum(1 for o in self.outcomes.values() if o == ARRIVAL_COMPLETED)

    @property
    def failed(self) -> list[str]:
        """The branches that failed, in blueprint order."""
        return [p for p in self.predecessors if self.outcomes.get(p) == ARRIVAL_FAILED]

    @property
    def outstanding(self) -> int:
        """How many branches have not arrived yet."""
        return len(self.predecessors) - len(self.outcomes)

    @property
    def complete(self) -> bool:
        """Whether every branch has arrived."""
        return self.outstanding == 0

    @property
    def all_skipped(self) -> bool:
        """Whether every branch arrived skipped (none of them was taken)."""
        return self.complete and all(o == ARRIVAL_SKIPPED for o in self.outcomes.values())


class JoinStrategy:
    """One ``joinStrategy`` value: subclass, set the class attributes, implement ``decide``."""

    #: The name blueprints write in ``config.joinStrategy``.
    name: ClassVar[str]
    #: Extra ``config`` keys this strategy reads.
    options: ClassVar[tuple[JoinOption, ...]] = ()
    #: A failed branch is an arrival (``failed``), not the run's failure.
    tolerates_failure: ClassVar[bool] = False
    #: Branches still pending or running when the join fires are cancelled (the losers).
    cancels_losers: ClassVar[bool] = False
    #: A fan-out of plain branches into this join may run as a Celery chord.
    chord_eligible: ClassVar[bool] = False
    #: The join fires on the first completion(s): its input is the first branch's output
    #: (else the last's, as flowcraft's "processed last").
    first_wins: ClassVar[bool] = False

    def check(self, options: Mapping[str, Any], predecessors: int | None) -> list[tuple[str, str]]:
        """Problems with the options, as ``(issue code, message)``; ``predecessors`` when known."""
        return []

    def decide(self, options: Mapping[str, Any], arrivals: Arrivals) -> Decision:
        """Wait, fire, skip (no branch was taken) or fail the run."""
        raise NotImplementedError  # pragma: no cover - every strategy implements it
