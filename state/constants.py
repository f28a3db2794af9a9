"""Names, limits and time constants of the state layer, units in the names."""

from __future__ import annotations

#: Schema version this code writes; ``flowbridge migrate`` brings a store up to it.
#: 2: waits, timers and the event inbox (Scylla: new tables and node columns).
SCHEMA_VERSION = 2

#: Width of the (status, time bucket) index buckets; the reconciler reads whole buckets.
STATUS_BUCKET_S = 60

#: Finished runs are kept this long, then expire (a live run never expires).
DEFAULT_RETENTION_S = 30 * 24 * 3600

#: How long SQLite waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: Run statuses, in lifecycle order.
RUN_PENDING = "pending"
RUN_RUNNING = "running"
RUN_WAITING = "waiting"
RUN_COMPLETED = "completed"
RUN_FAILED = "failed"
RUN_CANCELLED = "cancelled"
RUN_ACTIVE = frozenset({RUN_PENDING, RUN_RUNNING, RUN_WAITING})
RUN_TERMINAL = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED})

#: Node statuses; ``skipped`` marks a successor on an edge that was not taken.
NODE_PENDING = "pending"
NODE_RUNNING = "running"
NODE_WAITING = "waiting"
NODE_COMPLETED = "completed"
NODE_FAILED = "failed"
NODE_SKIPPED = "skipped"
NODE_CANCELLED = "cancelled"
NODE_ACTIVE = frozenset({NODE_PENDING, NODE_RUNNING, NODE_WAITING})
NODE_SETTLED = frozenset({NODE_COMPLETED, NODE_FAILED, NODE_SKIPPED, NODE_CANCELLED})

#: Join arrival outcomes recorded per predecessor.
ARRIVAL_COMPLETED = "completed"
ARRIVAL_FAILED = "failed"
ARRIVAL_SKIPPED = "skipped"
