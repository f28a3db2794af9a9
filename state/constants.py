"""Names, limits and time constants of the state layer, units in the names.

The status names (``RUN_ACTIVE``, ``NODE_PENDING``, ...) are the members of the
enums in ``state.records``, kept here under their old names for callers.
"""

from __future__ import annotations

from typing import Final

from state.records import (
    NODE_ACTIVE,
    NODE_SETTLED,
    RUN_ACTIVE,
    RUN_RUNNABLE,
    RUN_TERMINAL,
    ArrivalOutcome,
    NodeStatus,
    RunStatus,
)

__all__ = [
    "ARRIVAL_COMPLETED",
    "ARRIVAL_FAILED",
    "ARRIVAL_SKIPPED",
    "DEFAULT_RETENTION_S",
    "NODE_ACTIVE",
    "NODE_CANCELLED",
    "NODE_COMPLETED",
    "NODE_FAILED",
    "NODE_PENDING",
    "NODE_RUNNING",
    "NODE_SETTLED",
    "NODE_SKIPPED",
    "NODE_WAITING",
    "RUN_ACTIVE",
    "RUN_CANCELLED",
    "RUN_COMPLETED",
    "RUN_FAILED",
    "RUN_PAUSED",
    "RUN_PENDING",
    "RUN_RUNNABLE",
    "RUN_RUNNING",
    "RUN_TERMINAL",
    "RUN_WAITING",
    "SCHEMA_VERSION",
    "SQLITE_BUSY_TIMEOUT_MS",
    "SQLITE_WAL_LIMIT_BYTES",
    "STATUS_BUCKET_S",
]

#: Schema version this code writes; ``flowbridge migrate`` brings a store up to it.
#: 2: waits, timers and the event inbox (Scylla: new tables and node columns).
#: 3: code workflows (``wf_*`` tables).
#: 4: the run's attempt (``runs.attempt``), which ``retry_run`` advances; outbox headers.
#: 5: a run's parent (``subflow`` children) and the pages of batches.
#: 6: node leases (``nodes.claimed_by``, ``nodes.lease_until``): who runs an attempt, until when.
SCHEMA_VERSION: Final = 6

#: Width of the (status, time bucket) index buckets; the reconciler reads whole buckets.
STATUS_BUCKET_S: Final = 60

#: Finished runs are kept this long, then expire (a live run never expires).
DEFAULT_RETENTION_S: Final = 30 * 24 * 3600

#: How long SQLite waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
#: What a checkpoint truncates the WAL file to (``journal_size_limit``): without it the WAL
#: keeps the size of its largest backlog for good (the soak saw 109 MB after a slow spell).
SQLITE_WAL_LIMIT_BYTES: Final = 32 * 1024 * 1024

RUN_PENDING: Final = RunStatus.PENDING
RUN_RUNNING: Final = RunStatus.RUNNING
RUN_WAITING: Final = RunStatus.WAITING
RUN_COMPLETED: Final = RunStatus.COMPLETED
RUN_FAILED: Final = RunStatus.FAILED
RUN_CANCELLED: Final = RunStatus.CANCELLED
RUN_PAUSED: Final = RunStatus.PAUSED

NODE_PENDING: Final = NodeStatus.PENDING
NODE_RUNNING: Final = NodeStatus.RUNNING
NODE_WAITING: Final = NodeStatus.WAITING
NODE_COMPLETED: Final = NodeStatus.COMPLETED
NODE_FAILED: Final = NodeStatus.FAILED
NODE_SKIPPED: Final = NodeStatus.SKIPPED
NODE_CANCELLED: Final = NodeStatus.CANCELLED

ARRIVAL_COMPLETED: Final = ArrivalOutcome.COMPLETED
ARRIVAL_FAILED: Final = ArrivalOutcome.FAILED
ARRIVAL_SKIPPED: Final = ArrivalOutcome.SKIPPED
