"""Task names, Redis keys and sizes of the tasks package, units in the names."""

from __future__ import annotations

#: The Celery task that runs one attempt of one node.
RUN_NODE_TASK = "flowbridge.run_node"
#: A chord header task: runs a branch of plain nodes, advancing with ``Task.replace``.
BRANCH_TASK = "flowbridge.run_branch"
#: A chord body: fires the join the branches meet at.
JOIN_TASK = "flowbridge.fire_join"
#: Activates a code workflow run: replays its history and applies its inbox.
WF_ACTIVATE_TASK = "flowbridge.wf.activate"
#: Runs one attempt of an ``@activity``, then activates its run with the outcome.
WF_ACTIVITY_TASK = "flowbridge.wf.activity"
#: Link callbacks of a plain Celery task called as an activity (its result, its failure).
WF_RESOLVE_TASK = "flowbridge.wf.resolve"
WF_RESOLVE_ERROR_TASK = "flowbridge.wf.resolve_error"
#: The Celery beat task that re-emits stalled runs' next jobs.
RECONCILE_TASK = "flowbridge.reconcile"
#: Redis list workers push to after committing outbox rows (FLOWBRIDGE_REDIS_PREFIX applies).
OUTBOX_HINT_KEY = "flowbridge:outbox-hint"
#: Shard queues are ``flowbridge.shard.<n>``.
SHARD_QUEUE_PREFIX = "flowbridge.shard."
#: Blueprint snapshots parsed and kept per process.
SNAPSHOT_CACHE_SIZE = 2048
#: Grace added to a node's timeout before Celery's hard time limit kills the process.
HARD_LIMIT_GRACE_S = 10
#: Redis hash of the workers that lacked a node's ``uses`` (suffix ``<run>:<node>:<iteration>``).
MISSING_NODE_KEY = "flowbridge:missing:"
#: The missing-node record outlives the wait by this much (then expires).
MISSING_NODE_TTL_EXTRA_S = 3600
#: A node whose ``uses`` this worker lacks is requeued after at most this long.
MISSING_NODE_RETRY_S = 2.0
#: Each worker's and bridge's registered names: ``<prefix>flowbridge:registry:<process>``.
REGISTRY_KEY = "flowbridge:registry:"
#: A process's registry record expires this long after its last refresh.
REGISTRY_TTL_S = 90
#: How often a running process refreshes its registry record.
REGISTRY_REFRESH_S = 30.0
#: The Celery beat task that re-dispatches node tasks lost between a queue and a worker.
CHECK_DISPATCH_TASK = "flowbridge.check_dispatch"
#: Header every task message flowbridge sends carries: the sender's wall time (``time.time()``).
SENT_AT_HEADER = "flowbridge-sent-at"
#: Per shard queue, a sorted set of the node tasks sent to it and not yet received by a worker
#: (member: ``[run_id, node_id, iteration]`` as JSON, score: the ``SENT_AT_HEADER`` value);
#: suffix: the queue's name.
SENT_KEY = "flowbridge:sent:"
#: Sorted set of worker names by the time of their last liveness record.
LIVE_WORKERS_KEY = "flowbridge:live"
#: Each worker's liveness record (``LIVE_KEY + name``): its pid and the node tasks it holds.
LIVE_KEY = "flowbridge:live:"
#: How often a worker's main process writes its liveness record.
LIVE_PERIOD_S = 1.0
#: A worker whose record is older than this is taken for dead (its record expires later).
LIVE_STALE_S = 3.0
#: The record's Redis TTL (only garbage collection: ``LIVE_STALE_S`` decides).
LIVE_TTL_S = 60
#: Clock differences between hosts, and the moment between a send's stamp and its LPUSH,
#: that the dispatch check allows for before it calls a task lost.
DISPATCH_SLACK_S = 1.0

#: Context keys flowbridge keeps for itself start with this (hidden from the run's JSON).
INTERNAL_PREFIX = "_flowbridge."
#: The context key holding a loop's latest iteration: ``LOOP_KEY + controller id``.
LOOP_KEY = INTERNAL_PREFIX + "loop:"
