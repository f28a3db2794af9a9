"""Crash drills: ``FLOWBRIDGE_FAULT=<point>[@<marker file>]`` kills this process at that point.

The points sit where a crash is hardest to recover from: a code workflow's
activation ``before_commit``, ``after_commit`` (committed, nothing dispatched),
``after_dispatch`` (dispatched, not marked), ``in_activity`` (the activity's
effect happened, its result is not recorded), and ``after_receive`` (a worker's
main process took a task from its queue and has not run it: it is left
unacknowledged by a dead worker), ``before_inline`` (a node committed, its
successor, to run in the same task, not started: only the task's redelivery
finds it). With a marker file the crash
happens once (the file is created first), so the redelivery can succeed;
without one, every pass through the point crashes. For fault-injection tests
and operators' drills; unset (the default), it costs one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import signal

__all__ = ["POINTS", "crash_point"]

log = logging.getLogger("flowbridge.faults")

POINTS = frozenset(
    {
        "before_commit",
        "after_commit",
        "after_dispatch",
        "in_activity",
        "after_receive",
        "before_inline",
    }
)


def crash_point(name: str) -> None:
    """SIGKILL this process if ``FLOWBRIDGE_FAULT`` names ``name`` (once per marker file)."""
    spec = os.environ.get("FLOWBRIDGE_FAULT")
    if not spec:
        return
    point, _, marker = spec.partition("@")
    if point != name:
        return
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    log.critical("FLOWBRIDGE_FAULT=%s: killing pid %d", spec, os.getpid())
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)
