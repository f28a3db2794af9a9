"""The store's rules, once for every backend: operations in, change sets out.

Each rule is a pure function of the rows an operation read (as records or
views), its arguments and ``now``; it returns a change (``state.rules.changes``)
that says whether the operation applies and what it writes. Backends only
read, call the rule and write its change:

- ``state.rules.runs``: creating a run, status changes, cancel (or its marker),
  fences, stall claims, a run waking up or settling into ``waiting``;
- ``state.rules.nodes``: claiming an attempt, completing, retrying, failing and
  cancelling a node, firing a join;
- ``state.rules.leases``: when a running node with a lease is stalled, who renews it;
- ``state.rules.operator``: an operator's pause, resume and retry of a run;
- ``state.rules.waits``: suspending a node (parking it or handing it an event
  already here), waking it by its timer or an event, delivering an event.
"""

from __future__ import annotations

from state.rules import leases, nodes, operator, runs, waits
from state.rules.changes import (
    ABSENT,
    AS_READ,
    KEEP,
    NO_FOLLOW_UPS,
    NONE,
    Condition,
    Event,
    FailRun,
    FollowUps,
    NodeChange,
    RunChange,
    RunView,
    Verdict,
    Wait,
)

__all__ = [
    "ABSENT",
    "AS_READ",
    "KEEP",
    "NONE",
    "NO_FOLLOW_UPS",
    "Condition",
    "Event",
    "FailRun",
    "FollowUps",
    "NodeChange",
    "RunChange",
    "RunView",
    "Verdict",
    "Wait",
    "leases",
    "nodes",
    "operator",
    "runs",
    "waits",
]
