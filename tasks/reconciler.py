"""The reconciler: finds runs that made no progress and re-dispatches their next valid jobs.

This first version is deliberately conservative (see docs/reconciler.md): it
reads stalled runs through the store's (status, time bucket) index — never a
scan — and, for each, re-dispatches nodes that stayed ``pending`` longer than
the threshold (their task message was lost), fires joins whose arrivals are
complete but that never fired, and finishes runs with nothing left to do. It
never re-evaluates edge conditions: the frontier comes from the edges taken.
Nodes stuck ``running`` (a lost message of a killed worker) are left to the
lock-and-fence reconciler of the durable-timers issue.
"""

from __future__ import annotations

import logging
import time

from state.constants import RUN_PENDING, RUN_RUNNING
from tasks.runtime import Runtime

__all__ = ["reconcile_once"]

log = logging.getLogger("flowbridge.reconciler")

#: Stalled runs handled per status in one pass.
BATCH = 500


def reconcile_once(rt: Runtime, *, now: float | None = None) -> dict[str, int]:
    """One pass; returns ``{scanned, stalled, reconciled, failed}``."""
    from tasks.engine import repair_run

    now = time.time() if now is None else now
    older = now - rt.settings.stalled_after_s
    report = {"scanned": 0, "stalled": 0, "reconciled": 0, "failed": 0}
    for status in (RUN_PENDING, RUN_RUNNING):
        for run_id in rt.store.find_stalled(status=status, older_than=older, limit=BATCH):
            report["scanned"] += 1
            run = rt.store.get_run(run_id)
            # Index rows are hints: the run row decides.
            if run is None or run.status != status or run.updated_at >= older:
                continue
            report["stalled"] += 1
            try:
                actions = repair_run(rt, run, stale_before=older)
            except Exception:
                log.exception("reconciling run %s failed", run_id)
                report["failed"] += 1
                continue
            if actions:
                report["reconciled"] += 1
                rt.store.append_history(run_id, "run.reconciled", data={"actions": actions})
                log.info("run %s reconciled: %s", run_id, ", ".join(actions))
    return report
