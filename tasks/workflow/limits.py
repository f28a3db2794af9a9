"""The limits of one generation of a code workflow, with errors that say what to do.

Per generation (``../shared/WORKFLOWS.md`` §7, after Temporal's 10,240/51,200
events): a warning at 10,000 activations or 10 MB of history
(``ctx.continue_as_new_suggested`` turns True), a failure at 50,000 or 50 MB;
at most 2,000 durable calls outstanding at once. A run over a hard limit fails
with the reason instead of growing until replay is too slow to finish.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from tasks.workflow.history import Activation, Command
from tasks.workflow.machine import Machine

__all__ = [
    "FAIL_ACTIVATIONS",
    "FAIL_BYTES",
    "MAX_OUTSTANDING",
    "WARN_ACTIVATIONS",
    "WARN_BYTES",
    "check_limits",
]

log = logging.getLogger("flowbridge.workflow")

WARN_ACTIVATIONS: Final = 10_000
FAIL_ACTIVATIONS: Final = 50_000
WARN_BYTES: Final = 10 * 1024 * 1024
FAIL_BYTES: Final = 50 * 1024 * 1024
MAX_OUTSTANDING: Final = 2_000


def history_bytes(history: Sequence[Activation]) -> int:
    """The stored size of a generation's history."""
    return sum(len(json.dumps(a.to_json(), separators=(",", ":"))) for a in history)


def check_limits(act: Activation, history: Sequence[Activation], machine: Machine) -> Activation:
    """``act``, or ``act`` ending the run with a failure that names the limit it broke."""
    n = act.n
    size = history_bytes(history) + len(json.dumps(act.to_json(), separators=(",", ":")))
    outstanding = len(machine.pending) + len(machine.timers)
    problem = None
    if n > FAIL_ACTIVATIONS:
        problem = f"{n} activations in one generation (limit {FAIL_ACTIVATIONS})"
    elif size > FAIL_BYTES:
        problem = f"{size} bytes of history in one generation (limit {FAIL_BYTES})"
    elif outstanding > MAX_OUTSTANDING:
        problem = f"{outstanding} durable calls outstanding (limit {MAX_OUTSTANDING})"
    if problem is None:
        if n == WARN_ACTIVATIONS or (size > WARN_BYTES and n % 100 == 0):
            log.warning(
                "run %s: %d activations, %d bytes of history: call ctx.continue_as_new",
                machine.run_id,
                n,
                size,
            )
        return act
    error = f"the run is too big to replay: {problem}; use ctx.continue_as_new"
    ends = {"complete", "fail", "cancelled", "continue"}
    commands = tuple(c for c in act.commands if c.type not in ends)
    return replace(
        act, commands=(*commands, Command(seq=None, type="fail", payload={"error": error}))
    )


def suggested(n: int, size: int) -> bool:
    """Whether a generation is big enough that ``continue_as_new`` is advised."""
    return n >= WARN_ACTIVATIONS or size >= WARN_BYTES
