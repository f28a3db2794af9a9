"""The Scylla/Cassandra schema of the state store: constants, CQL DDL, migrations, statements.

Every query the store runs is in this module, so a reviewer can check in one
place that each one names a whole partition key (no ``ALLOW FILTERING``, no
secondary index, no materialized view, no token-range scan). ``docs/state.md``
explains why each key was chosen. The format of the ``effects`` column (the
staged writes of a conditional update) is ``state.scylla.effects``.
"""

from __future__ import annotations

import re
from typing import Any

from state.constants import STATUS_BUCKET_S
from state.errors import StateError
from state.keys import OUTBOX_SHARDS

__all__ = [
    "BUCKETS_PER_DAY",
    "INDEX_SHARDS",
    "OUTBOX_PARTITION_S",
    "OUTBOX_SETTLE_S",
    "OUTBOX_SHARDS",
    "STATEMENTS",
    "TIMER_BUCKETS_PER_DAY",
    "TIMER_BUCKET_S",
    "TIMER_SHARDS",
    "keyspace_cql",
    "migrations",
    "table_cql",
]

#: Shards of each (status, bucket) index partition: a bucket is read as this many partitions.
INDEX_SHARDS = 4
#: Minute buckets per day partition of the bucket directory.
BUCKETS_PER_DAY = 86400 // STATUS_BUCKET_S
# Shards of the outbox (``state.keys.OUTBOX_SHARDS``, ``crc32(id) % 8``): a relay pass reads
# one partition of each shard it holds.
#: Width of an outbox partition (it holds at most this much traffic of one shard).
OUTBOX_PARTITION_S = 3600
#: The relay re-reads this much recent outbox history each pass, covering clock skew and
#: commits still in flight; replays of older rows are re-stamped "now" so none lands behind it.
OUTBOX_SETTLE_S = 60.0
#: Width of a timer-index bucket: timers due within one minute share a bucket.
TIMER_BUCKET_S = 60
#: Shards of each timer bucket (``crc32(run_id) % TIMER_SHARDS``): a bucket is this many partitions.
TIMER_SHARDS = 8
#: Timer buckets per day partition of the timer bucket directory.
TIMER_BUCKETS_PER_DAY = 86400 // TIMER_BUCKET_S
#: ``gc_grace_seconds`` of the churn tables (index hints, outbox): a zombie row there is only
#: a stale hint or a re-published message, so tombstones need not live the default 10 days.
CHURN_GC_GRACE_S = 3 * 3600

_KEYSPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


def check_keyspace(name: str) -> str:
    """Return ``name`` if it is a valid unquoted CQL keyspace name (it is spliced into CQL)."""
    if not _KEYSPACE_RE.match(name):
        raise StateError(
            f"keyspace {name!r} is not a valid CQL name: a letter, then letters, digits or "
            "underscores, at most 48 characters"
        )
    return name


def keyspace_cql(keyspace: str, replication: dict[str, Any], *, tablets_off: bool) -> str:
    """``CREATE KEYSPACE IF NOT EXISTS`` with the configured replication."""
    # The values were validated by the URL parser; quote them as CQL string literals.
    opts = ", ".join(f"'{k}': '{v}'" for k, v in replication.items())
    cql = (
        f"CREATE KEYSPACE IF NOT EXISTS {check_keyspace(keyspace)} "
        f"WITH replication = {{{opts}}} AND durable_writes = true"
    )
    if tablets_off:
        # Scylla keyspaces on tablets do not support LWT (every decision here is one).
        cql += " AND tablets = {'enabled': false}"
    return cql


# --- tables ---------------------------------------------------------------------------
# Columns marked LWT are written only by conditional statements; the others never are.
_TABLES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS {ks}.schema_version (
        id text PRIMARY KEY,
        version int,        -- LWT
        created_at double   -- LWT (first migrate): where the outbox relay starts reading
    )""",
    # One partition per run: every column of a run is read together.
    """CREATE TABLE IF NOT EXISTS {ks}.runs (
        run_id text PRIMARY KEY,
        blueprint_id text, version text, input text, snapshot text, created_at double,
        status text,          -- LWT
        status_at double,     -- LWT
        output text,          -- LWT
        error text,           -- LWT
        fence int,            -- LWT
        reconciled_at double, -- LWT (the reconciler issue)
        attempt int,          -- LWT (schema 4): 1, then one more per retry (null: 1)
        lwt_op text,          -- LWT: token of the last conditional write, settles a CAS timeout
        effects text,         -- LWT: staged follow-up writes of that conditional write
        effects_done set<text>, -- plain: lwt_op tokens whose effects are all applied
        progress_at double,   -- plain, with TTL: last progress (attempts, commits, joins)
        bucket bigint,        -- plain, with TTL: bucket of the run's index hint
        parent text           -- LWT (schema 3, written at creation): a subflow child's parent
    )""",
    # One partition per node record: completions of parallel branches are LWTs, and Paxos
    # serialises per partition, so a fan-out of N does not contend on one run partition.
    """CREATE TABLE IF NOT EXISTS {ks}.nodes (
        run_id text, node_id text, iteration int,
        status text, attempts int, deliveries int, output text, action text,
        edges_taken frozen<list<text>>, error text, updated_at double,
        lwt_op text, effects text,   -- LWT, as in runs
        effects_done set<text>,      -- plain, as in runs
        -- LWT (schema 2): what a parked node waits for, where its timer hint is, what woke it
        wait_event text, wait_due double, wait_bucket bigint, wait_op text,
        woken text, woke_event text,
        -- LWT (schema 6): who runs the attempt, and its lease (renewed IF still theirs)
        claimed_by text, lease_until double,
        PRIMARY KEY ((run_id, node_id, iteration))
    )""",
    # Directory of a run's node records and arrival sets: what cancel and retention visit.
    """CREATE TABLE IF NOT EXISTS {ks}.run_nodes (
        run_id text, iteration int, node_id text,
        at double,  -- a regular column, so that WRITETIME can be read for the TTL rewrite
        PRIMARY KEY (run_id, iteration, node_id)
    )""",
    # A join's arrivals: a set keyed by predecessor (plain upserts), never a counter.
    """CREATE TABLE IF NOT EXISTS {ks}.arrivals (
        run_id text, join_id text, iteration int, predecessor text, outcome text,
        PRIMARY KEY ((run_id, join_id, iteration), predecessor)
    )""",
    # One row per context key, written USING TIMESTAMP of the commit: replays are no-ops and
    # parallel branches writing different keys never conflict.
    """CREATE TABLE IF NOT EXISTS {ks}.context (
        run_id text, key text, value text, written_at double,
        PRIMARY KEY (run_id, key)
    )""",
    """CREATE TABLE IF NOT EXISTS {ks}.history (
        run_id text, event_id timeuuid, at double, kind text, node_id text, data text,
        PRIMARY KEY (run_id, event_id)
    ) WITH CLUSTERING ORDER BY (event_id ASC)""",
    # (status, minute bucket, shard) index of runs by last progress: hints, re-checked.
    """CREATE TABLE IF NOT EXISTS {ks}.run_index (
        status text, bucket bigint, shard int, run_id text,
        PRIMARY KEY ((status, bucket, shard), run_id)
    ) WITH gc_grace_seconds = """
    + str(CHURN_GC_GRACE_S),
    # Which minute buckets of a day hold index hints, so reads skip the empty ones.
    """CREATE TABLE IF NOT EXISTS {ks}.run_index_buckets (
        status text, day bigint, bucket bigint,
        PRIMARY KEY ((status, day), bucket)
    ) WITH CLUSTERING ORDER BY (bucket ASC) AND gc_grace_seconds = """
    + str(CHURN_GC_GRACE_S),
    # Outbox: (hour, shard) partitions in time order; the relay reads each shard from its
    # cursor, so published (deleted) rows behind the cursor are never read again.
    """CREATE TABLE IF NOT EXISTS {ks}.outbox (
        hour bigint, shard int, created_at double, id text,
        topic text, key text, value text,
        headers text,  -- schema 4: extra Kafka headers (the trace context), JSON
        PRIMARY KEY ((hour, shard), created_at, id)
    ) WITH CLUSTERING ORDER BY (created_at ASC, id ASC) AND gc_grace_seconds = """
    + str(CHURN_GC_GRACE_S),
    """CREATE TABLE IF NOT EXISTS {ks}.outbox_cursor (
        name text, shard int, low double,
        PRIMARY KEY (name, shard)
    )""",
    # A run's parked nodes, by node: where deliver_event looks for waiters (hints, checked
    # against the node row) and where a re-run finds its first deadline. Plain writes.
    """CREATE TABLE IF NOT EXISTS {ks}.waits (
        run_id text, node_id text, iteration int,
        event text, due_at double, at double,
        PRIMARY KEY (run_id, node_id, iteration)
    )""",
    # Events delivered to a run, one row per event id: the insert (IF NOT EXISTS) is the
    # dedupe, and consuming an event is a conditional claim on its row. All columns are LWT.
    """CREATE TABLE IF NOT EXISTS {ks}.inbox (
        run_id text, event_id text,
        name text, payload text, received_at double,
        consumed_by text, consumed_it int, consumed_how text,
        lwt_op text,   -- token of the last conditional write (insert, claim, give-back)
        recv_op text,  -- the insert's own token: settles a timed-out insert for good
        PRIMARY KEY (run_id, event_id)
    )""",
    # Timers by due time: (minute bucket, shard) partitions clustered by due time, so the
    # reconciler reads only due buckets. Hints, checked against the node row; each park
    # writes its own (``park_op``), so deleting a stale hint never hides a newer one.
    """CREATE TABLE IF NOT EXISTS {ks}.timers (
        bucket bigint, shard int, due_at double, run_id text, node_id text, iteration int,
        park_op text,
        at double,  -- a regular column, so that a reader can delete exactly what it saw
        PRIMARY KEY ((bucket, shard), due_at, run_id, node_id, iteration, park_op)
    ) WITH CLUSTERING ORDER BY (due_at ASC, run_id ASC, node_id ASC, iteration ASC, park_op ASC)
      AND gc_grace_seconds = """
    + str(CHURN_GC_GRACE_S),
    # A batch's items and outputs in pages of the run's partition (schema 3): no row holds a
    # whole list. Plain upserts, each page computed the same by whoever writes it.
    """CREATE TABLE IF NOT EXISTS {ks}.batch_pages (
        run_id text, batch_id text, page int, items text,
        PRIMARY KEY (run_id, batch_id, page)
    )""",
    # Which timer buckets of a day hold hints, so the reconciler skips the empty minutes.
    """CREATE TABLE IF NOT EXISTS {ks}.timer_buckets (
        day bigint, bucket bigint,
        PRIMARY KEY (day, bucket)
    ) WITH CLUSTERING ORDER BY (bucket ASC) AND gc_grace_seconds = """
    + str(CHURN_GC_GRACE_S),
    # --- code workflows (state.scylla.workflows) ---
    # gen: LWT (continue_as_new); dispatched, blocked: plain hints.
    """CREATE TABLE IF NOT EXISTS {ks}.wf_runs (
        run_id text PRIMARY KEY,
        gen int,          -- LWT
        dispatched int,   -- plain
        blocked text      -- plain
    )""",
    # One row per committed activation; the commit is its INSERT ... IF NOT EXISTS.
    # The commit is the CAS of the static ``last``: activation n goes in only after n - 1.
    """CREATE TABLE IF NOT EXISTS {ks}.wf_history (
        run_id text, gen int, n int,
        last int static,        -- LWT
        at double, data text,   -- LWT
        PRIMARY KEY ((run_id, gen), n)
    ) WITH CLUSTERING ORDER BY (n ASC)""",
    # What wakes a run, keyed by what dedupes it (plain: the history says what was consumed).
    """CREATE TABLE IF NOT EXISTS {ks}.wf_inbox (
        run_id text, key text,
        seq timeuuid, item text, consumed boolean,
        PRIMARY KEY (run_id, key)
    )""",
    # Durable timers by due minute, as the node timers; hints checked on the run.
    """CREATE TABLE IF NOT EXISTS {ks}.wf_timers (
        bucket bigint, shard int, due_at double, run_id text, gen int, seq int,
        PRIMARY KEY ((bucket, shard), due_at, run_id, gen, seq)
    ) WITH CLUSTERING ORDER BY (due_at ASC, run_id ASC, gen ASC, seq ASC)
      AND gc_grace_seconds = """
    + str(CHURN_GC_GRACE_S),
    """CREATE TABLE IF NOT EXISTS {ks}.wf_timer_buckets (
        day bigint, bucket bigint,
        PRIMARY KEY (day, bucket)
    ) WITH CLUSTERING ORDER BY (bucket ASC) AND gc_grace_seconds = """
    + str(CHURN_GC_GRACE_S),
)


def table_cql(keyspace: str) -> list[str]:
    """The ``CREATE TABLE IF NOT EXISTS`` statements of the current schema."""
    ks = check_keyspace(keyspace)
    return [t.format(ks=ks) for t in _TABLES]


#: Statements that bring a store from version N-1 to N (N > 1); version 1 is ``table_cql``.
#: New tables need none (``table_cql`` creates them); new columns do. An ``ADD`` of a
#: column that exists (a migration cut short and run again) is skipped by ``migrate``.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: tuple(
        f"ALTER TABLE {{ks}}.nodes ADD {column} {cql_type}"
        for column, cql_type in (
            ("wait_event", "text"),
            ("wait_due", "double"),
            ("wait_bucket", "bigint"),
            ("wait_op", "text"),
            ("woken", "text"),
            ("woke_event", "text"),
        )
    ),
    4: ("ALTER TABLE {ks}.runs ADD attempt int", "ALTER TABLE {ks}.outbox ADD headers text"),
    5: ("ALTER TABLE {ks}.runs ADD parent text",),
    6: (
        "ALTER TABLE {ks}.nodes ADD claimed_by text",
        "ALTER TABLE {ks}.nodes ADD lease_until double",
    ),
}


def migrations(keyspace: str, *, from_version: int, to_version: int) -> list[tuple[int, list[str]]]:
    """``(version, statements)`` to run, in order, to go from ``from_version`` to ``to_version``."""
    ks = check_keyspace(keyspace)
    return [
        (v, [s.format(ks=ks) for s in _MIGRATIONS.get(v, ())])
        for v in range(from_version + 1, to_version + 1)
    ]


# --- statements -----------------------------------------------------------------------
#: Every statement, by name; ``{ks}`` is the keyspace. All are prepared, and each names one
#: whole partition key (a reviewer can check it here: no query scans).
STATEMENTS: dict[str, str] = {
    # schema_version (LWT only)
    "version_get": "SELECT version, created_at FROM {ks}.schema_version WHERE id = 'flowbridge'",
    "version_init": "INSERT INTO {ks}.schema_version (id, version, created_at) "
    "VALUES ('flowbridge', ?, ?) IF NOT EXISTS",
    "version_set": "UPDATE {ks}.schema_version SET version = ? WHERE id = 'flowbridge' "
    "IF version = ?",
    # runs
    "run_get": "SELECT run_id, blueprint_id, version, input, snapshot, created_at, status, "
    "status_at, output, error, fence, reconciled_at, attempt, lwt_op, effects, effects_done, "
    "progress_at, bucket, parent, WRITETIME(status) AS status_wt FROM {ks}.runs WHERE run_id = ?",
    "run_create": "INSERT INTO {ks}.runs (run_id, blueprint_id, version, input, snapshot, "
    "created_at, status, status_at, output, error, fence, lwt_op, effects, parent) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?",
    # Six placeholders: a ``from_`` set is padded by repeating a member (IN ? is not portable).
    "run_transition": "UPDATE {ks}.runs USING TTL ? SET status = ?, status_at = ?, output = ?, "
    "error = ?, lwt_op = ?, effects = ? WHERE run_id = ? IF status IN (?, ?, ?, ?, ?, ?)",
    # Retention: the same values again with a TTL, compare-and-set on the last LWT's token.
    "run_rewrite": "UPDATE {ks}.runs USING TTL ? SET blueprint_id = ?, version = ?, input = ?, "
    "snapshot = ?, created_at = ?, status = ?, status_at = ?, output = ?, error = ?, fence = ?, "
    "reconciled_at = ?, attempt = ?, lwt_op = ?, effects = ?, parent = ? WHERE run_id = ? "
    "IF lwt_op = ?",
    # A rejected start's record replaced by the run (compare-and-set on its token; no TTL).
    "run_restart": "UPDATE {ks}.runs USING TTL ? SET blueprint_id = ?, version = ?, input = ?, "
    "snapshot = ?, created_at = ?, status = ?, status_at = ?, output = null, error = null, "
    "lwt_op = ?, effects = ? WHERE run_id = ? IF lwt_op = ?",
    # A retry: a finished run's next attempt (no TTL: it lives again).
    "run_retry": "UPDATE {ks}.runs USING TTL ? SET status = ?, status_at = ?, output = null, "
    "error = null, attempt = ?, lwt_op = ?, effects = ? WHERE run_id = ? "
    "IF status IN (?, ?, ?, ?, ?, ?)",
    # The row marker of an INSERT has its own liveness: give it the TTL too (no LWT column).
    "run_marker": "INSERT INTO {ks}.runs (run_id) VALUES (?) USING TTL ? AND TIMESTAMP ?",
    # Fenced cancel: as run_transition, and only while the fence is the one the caller checked.
    "run_transition_fenced": "UPDATE {ks}.runs USING TTL ? SET status = ?, status_at = ?, "
    "output = ?, error = ?, lwt_op = ?, effects = ? WHERE run_id = ? "
    "IF status IN (?, ?, ?, ?, ?, ?) AND fence = ?",
    # Compare-and-set on the run row's last LWT token: fences, stall claims, waiting <-> running.
    # UNSET leaves a column alone, so one statement serves them all.
    "run_cas": "UPDATE {ks}.runs USING TTL ? SET status = ?, status_at = ?, fence = ?, "
    "reconciled_at = ?, lwt_op = ?, effects = ? WHERE run_id = ? IF lwt_op = ?",
    "run_progress": "UPDATE {ks}.runs USING TTL ? AND TIMESTAMP ? SET progress_at = ?, "
    "bucket = ? WHERE run_id = ?",
    # A set, not one column: each op's mark is its own cell, so clock skew between two
    # writers can never make one op's mark hide another's.
    "run_effects_done": "UPDATE {ks}.runs USING TTL ? AND TIMESTAMP ? "
    "SET effects_done = effects_done + ? WHERE run_id = ?",
    # nodes
    "node_get": "SELECT run_id, node_id, iteration, status, attempts, deliveries, output, "
    "action, edges_taken, error, updated_at, lwt_op, effects, effects_done, wait_event, "
    "wait_due, wait_bucket, wait_op, woken, woke_event, claimed_by, lease_until, "
    "WRITETIME(status) AS status_wt FROM {ks}.nodes "
    "WHERE run_id = ? AND node_id = ? AND iteration = ?",
    # ``IF status = null``, not ``IF NOT EXISTS``: a record a retry reset (deleted) can leave
    # cells stamped ahead of the delete (the retention rewrite's marks), and it must count as
    # absent. Parameters: ttl, status, at, op, effects, then the key.
    "node_create": "UPDATE {ks}.nodes USING TTL ? SET status = ?, attempts = 0, deliveries = 0, "
    "edges_taken = [], updated_at = ?, lwt_op = ?, effects = ? "
    "WHERE run_id = ? AND node_id = ? AND iteration = ? IF status = null",
    "node_begin": "UPDATE {ks}.nodes USING TTL ? SET status = 'running', attempts = ?, "
    "deliveries = ?, updated_at = ?, lwt_op = ?, effects = ?, claimed_by = ?, lease_until = ? "
    "WHERE run_id = ? AND node_id = ? AND iteration = ? "
    "IF status = ? AND attempts = ? AND deliveries = ?",
    # No TTL: only a running node's lease is renewed, and a running node's run is live.
    "node_renew_lease": "UPDATE {ks}.nodes SET lease_until = ? "
    "WHERE run_id = ? AND node_id = ? AND iteration = ? "
    "IF status = 'running' AND attempts = ? AND claimed_by = ?",
    # ``attempts`` becomes max(attempts, ?): one statement when it grows, one when it does not.
    "node_complete_up": "UPDATE {ks}.nodes USING TTL ? SET status = ?, output = ?, action = ?, "
    "edges_taken = ?, error = null, attempts = ?, updated_at = ?, lwt_op = ?, effects = ? "
    "WHERE run_id = ? AND node_id = ? AND iteration = ? "
    "IF status IN ('pending', 'running', 'waiting') AND attempts <= ?",
    "node_complete_keep": "UPDATE {ks}.nodes USING TTL ? SET status = ?, output = ?, action = ?, "
    "edges_taken = ?, error = null, updated_at = ?, lwt_op = ?, effects = ? "
    "WHERE run_id = ? AND node_id = ? AND iteration = ? "
    "IF status IN ('pending', 'running', 'waiting') AND attempts > ?",
    "node_retry_up": "UPDATE {ks}.nodes USING TTL ? SET status = 'pending', attempts = ?, "
    "error = ?, updated_at = ?, lwt_op = ?, effects = ? "
    "WHERE run_id = ? AND node_id = ? AND iteration = ? "
    "IF status IN ('pending', 'running', 'waiting') AND attempts <= ?",
    "node_retry_keep": "UPDATE {ks}.nodes USING TTL ? SET status = 'pending', error = ?, "
    "updated_at = ?, lwt_op = ?, effects = ? "
    "WHERE run_id = ? AND node_id = ? AND iteration = ? "
    "IF status IN ('pending', 'running', 'waiting') AND attempts > ?",
    "node_fail": "UPDATE {ks}.nodes USING TTL ? SET status = 'failed', error = ?, "
    "updated_at = ?, lwt_op = ?, effects = ? "
    "WHERE run_id = ? AND node_id = ? AND iteration = ? "
    "IF status IN ('pending', 'running', 'waiting')",
    "node_cancel": "UPDATE {ks}.nodes USING TTL ? SET status = 'cancelled', error = ?, "
    "updated_at = ?, lwt_op = ?, effects = ? "
    "WHERE run_id = ? AND node_id = ? AND iteration = ? "
    "IF status IN ('pending', 'running', 'waiting')",
    "node_rewrite": "UPDATE {ks}.nodes USING TTL ? SET status = ?, attempts = ?, deliveries = ?, "
    "output = ?, action = ?, edges_taken = ?, error = ?, updated_at = ?, lwt_op = ?, effects = ?, "
    "wait_event = ?, wait_due = ?, wait_bucket = ?, wait_op = ?, woken = ?, woke_event = ?, "
    "claimed_by = ?, lease_until = ? "
    "WHERE run_id = ? AND node_id = ? AND iteration = ? IF lwt_op = ?",
    # Waiting: park a running node, put it back to running, wake it, record what it consumed.
    # Each is a compare-and-set on the node row's last LWT token (``lwt_op``): the state
    # the caller read and decided on is the state it changes.
    "node_park": "UPDATE {ks}.nodes USING TTL ? SET status = 'waiting', wait_event = ?, "
    "wait_due = ?, wait_bucket = ?, wait_op = ?, woken = ?, woke_event = ?, updated_at = ?, "
    "lwt_op = ?, effects = ? WHERE run_id = ? AND node_id = ? AND iteration = ? "
    "IF status = 'running' AND lwt_op = ?",
    "node_unpark": "UPDATE {ks}.nodes USING TTL ? SET status = 'running', updated_at = ?, "
    "lwt_op = ?, effects = ? WHERE run_id = ? AND node_id = ? AND iteration = ? "
    "IF status = 'waiting' AND lwt_op = ?",
    "node_wake": "UPDATE {ks}.nodes USING TTL ? SET status = 'pending', woken = ?, woke_event = ?, "
    "updated_at = ?, lwt_op = ?, effects = ? WHERE run_id = ? AND node_id = ? AND iteration = ? "
    "IF status = 'waiting' AND lwt_op = ?",
    "node_consumed": "UPDATE {ks}.nodes USING TTL ? SET wait_event = ?, woken = 'event', "
    "woke_event = ?, updated_at = ?, lwt_op = ?, effects = ? "
    "WHERE run_id = ? AND node_id = ? AND iteration = ? IF status = 'running' AND lwt_op = ?",
    # A retry resets a record: deleted only if no conditional write changed it since it was read.
    "node_reset": "DELETE FROM {ks}.nodes WHERE run_id = ? AND node_id = ? AND iteration = ? "
    "IF lwt_op = ?",
    "node_marker": "INSERT INTO {ks}.nodes (run_id, node_id, iteration) VALUES (?, ?, ?) "
    "USING TTL ? AND TIMESTAMP ?",
    "node_effects_done": "UPDATE {ks}.nodes USING TTL ? AND TIMESTAMP ? "
    "SET effects_done = effects_done + ? WHERE run_id = ? AND node_id = ? AND iteration = ?",
    # the run's directory of node records and arrival sets
    "dir_put": "INSERT INTO {ks}.run_nodes (run_id, iteration, node_id, at) "
    "VALUES (?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?",
    "dir_get": "SELECT iteration, node_id, at, WRITETIME(at) AS wt FROM {ks}.run_nodes "
    "WHERE run_id = ?",
    # arrivals
    "arrival_put": "INSERT INTO {ks}.arrivals (run_id, join_id, iteration, predecessor, outcome) "
    "VALUES (?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?",
    # Stamped with the retry's time: a later arrival of the re-run node is never deleted.
    "arrival_del": "DELETE FROM {ks}.arrivals USING TIMESTAMP ? WHERE run_id = ? AND join_id = ? "
    "AND iteration = ? AND predecessor = ?",
    "arrival_get": "SELECT predecessor, outcome, WRITETIME(outcome) AS wt FROM {ks}.arrivals "
    "WHERE run_id = ? AND join_id = ? AND iteration = ?",
    # context
    "context_put": "INSERT INTO {ks}.context (run_id, key, value, written_at) "
    "VALUES (?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?",
    "context_get": "SELECT key, value, written_at, WRITETIME(value) AS wt FROM {ks}.context "
    "WHERE run_id = ?",
    # Stamped with the commit's time: a replayed older write of the key cannot bring it back.
    "context_del": "DELETE FROM {ks}.context USING TIMESTAMP ? WHERE run_id = ? AND key = ?",
    # batch pages (plain)
    "batch_put": "INSERT INTO {ks}.batch_pages (run_id, batch_id, page, items) "
    "VALUES (?, ?, ?, ?) "
    "USING TTL ?",
    "batch_get": "SELECT page, items FROM {ks}.batch_pages "
    "WHERE run_id = ? AND batch_id = ? AND page = ?",
    "batch_all": "SELECT batch_id, page, items, WRITETIME(items) AS wt FROM {ks}.batch_pages "
    "WHERE run_id = ?",
    "batch_rewrite": "INSERT INTO {ks}.batch_pages (run_id, batch_id, page, items) "
    "VALUES (?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?",
    # history
    "history_put": "INSERT INTO {ks}.history (run_id, event_id, at, kind, node_id, data) "
    "VALUES (?, ?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?",
    "history_get": "SELECT event_id, at, kind, node_id, data, WRITETIME(kind) AS wt "
    "FROM {ks}.history WHERE run_id = ?",
    # status index
    "index_put": "INSERT INTO {ks}.run_index (status, bucket, shard, run_id) "
    "VALUES (?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?",
    "index_del": "DELETE FROM {ks}.run_index USING TIMESTAMP ? "
    "WHERE status = ? AND bucket = ? AND shard = ? AND run_id = ?",
    "index_get": "SELECT run_id FROM {ks}.run_index WHERE status = ? AND bucket = ? AND shard = ?",
    "buckets_put": "INSERT INTO {ks}.run_index_buckets (status, day, bucket) VALUES (?, ?, ?) "
    "USING TTL ?",
    "buckets_del": "DELETE FROM {ks}.run_index_buckets USING TIMESTAMP ? "
    "WHERE status = ? AND day = ? AND bucket = ?",
    "buckets_get": "SELECT bucket FROM {ks}.run_index_buckets WHERE status = ? AND day = ?",
    # outbox
    "outbox_put": "INSERT INTO {ks}.outbox (hour, shard, created_at, id, topic, key, value, "
    "headers) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
    "outbox_get": "SELECT created_at, id, topic, key, value, headers FROM {ks}.outbox "
    "WHERE hour = ? AND shard = ? AND created_at >= ? LIMIT ?",
    "outbox_del": "DELETE FROM {ks}.outbox WHERE hour = ? AND shard = ? AND created_at = ? "
    "AND id = ?",
    "cursor_get": "SELECT shard, low FROM {ks}.outbox_cursor WHERE name = 'outbox'",
    "cursor_set": "UPDATE {ks}.outbox_cursor SET low = ? WHERE name = 'outbox' AND shard = ?",
    # waits (plain)
    "wait_put": "INSERT INTO {ks}.waits (run_id, node_id, iteration, event, due_at, at) "
    "VALUES (?, ?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?",
    "wait_del": "DELETE FROM {ks}.waits USING TIMESTAMP ? WHERE run_id = ? AND node_id = ? "
    "AND iteration = ?",
    "wait_get": "SELECT event, due_at, at FROM {ks}.waits "
    "WHERE run_id = ? AND node_id = ? AND iteration = ?",
    "waits_get": "SELECT node_id, iteration, event, due_at, at, WRITETIME(at) AS wt "
    "FROM {ks}.waits WHERE run_id = ?",
    # inbox (LWT only)
    "inbox_put": "INSERT INTO {ks}.inbox (run_id, event_id, name, payload, received_at, lwt_op, "
    "recv_op) VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?",
    "inbox_get": "SELECT event_id, name, payload, received_at, consumed_by, consumed_it, "
    "consumed_how, lwt_op, recv_op, WRITETIME(name) AS wt FROM {ks}.inbox "
    "WHERE run_id = ? AND event_id = ?",
    "inbox_all": "SELECT event_id, name, payload, received_at, consumed_by, consumed_it, "
    "consumed_how, lwt_op, recv_op, WRITETIME(name) AS wt FROM {ks}.inbox WHERE run_id = ?",
    # Consuming an event: exactly one claim wins (the claimer's token becomes lwt_op).
    "inbox_claim": "UPDATE {ks}.inbox USING TTL ? SET consumed_by = ?, consumed_it = ?, "
    "consumed_how = ?, lwt_op = ? WHERE run_id = ? AND event_id = ? "
    "IF consumed_by = null AND lwt_op = ?",
    # Giving it back (its node was woken otherwise): only the claim's holder can.
    "inbox_release": "UPDATE {ks}.inbox USING TTL ? SET consumed_by = null, consumed_it = null, "
    "consumed_how = null, lwt_op = ? WHERE run_id = ? AND event_id = ? IF lwt_op = ?",
    "inbox_rewrite": "UPDATE {ks}.inbox USING TTL ? SET name = ?, payload = ?, received_at = ?, "
    "consumed_by = ?, consumed_it = ?, consumed_how = ?, lwt_op = ?, recv_op = ? "
    "WHERE run_id = ? AND event_id = ? IF lwt_op = ?",
    "inbox_marker": "INSERT INTO {ks}.inbox (run_id, event_id) VALUES (?, ?) "
    "USING TTL ? AND TIMESTAMP ?",
    # the timer index (plain hints)
    "timer_put": "INSERT INTO {ks}.timers (bucket, shard, due_at, run_id, node_id, iteration, "
    "park_op, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?",
    "timer_del": "DELETE FROM {ks}.timers USING TIMESTAMP ? WHERE bucket = ? AND shard = ? "
    "AND due_at = ? AND run_id = ? AND node_id = ? AND iteration = ? AND park_op = ?",
    "timers_get": "SELECT due_at, run_id, node_id, iteration, park_op, WRITETIME(at) AS wt "
    "FROM {ks}.timers "
    "WHERE bucket = ? AND shard = ? AND due_at <= ? LIMIT ?",
    "timer_buckets_put": "INSERT INTO {ks}.timer_buckets (day, bucket) VALUES (?, ?) "
    "USING TTL ? AND TIMESTAMP ?",
    "timer_buckets_get": "SELECT bucket FROM {ks}.timer_buckets WHERE day = ?",
    "timer_buckets_del": "DELETE FROM {ks}.timer_buckets USING TIMESTAMP ? "
    "WHERE day = ? AND bucket = ?",
    # code workflows (state.scylla.workflows)
    "wf_run_get": "SELECT gen, dispatched, blocked FROM {ks}.wf_runs WHERE run_id = ?",
    "wf_run_init": "INSERT INTO {ks}.wf_runs (run_id, gen) VALUES (?, 0) IF NOT EXISTS",
    "wf_gen_next": "UPDATE {ks}.wf_runs SET gen = ? WHERE run_id = ? IF gen = ?",
    "wf_dispatched_set": "UPDATE {ks}.wf_runs USING TTL ? SET dispatched = ? WHERE run_id = ?",
    "wf_blocked_set": "UPDATE {ks}.wf_runs USING TTL ? SET blocked = ? WHERE run_id = ?",
    "wf_history_get": "SELECT n, data FROM {ks}.wf_history WHERE run_id = ? AND gen = ?",
    "wf_history_one": "SELECT data FROM {ks}.wf_history WHERE run_id = ? AND gen = ? AND n = ?",
    # ``IF last = ?`` binds null for the first activation (``IF last = null``).
    "wf_history_put": "UPDATE {ks}.wf_history SET at = ?, data = ?, last = ? "
    "WHERE run_id = ? AND gen = ? AND n = ? IF last = ?",
    "wf_history_ttl": "UPDATE {ks}.wf_history USING TTL ? SET at = ?, data = ?, last = ? "
    "WHERE run_id = ? AND gen = ? AND n = ? IF last = ?",
    "wf_run_marker": "INSERT INTO {ks}.wf_runs (run_id) VALUES (?) USING TTL ?",
    "wf_gen_ttl": "UPDATE {ks}.wf_runs USING TTL ? SET gen = ? WHERE run_id = ? IF gen = ?",
    "wf_hints_ttl": "UPDATE {ks}.wf_runs USING TTL ? SET dispatched = ?, blocked = ? "
    "WHERE run_id = ?",
    "wf_inbox_get": "SELECT key, seq, item, consumed FROM {ks}.wf_inbox WHERE run_id = ?",
    "wf_inbox_has": "SELECT key FROM {ks}.wf_inbox WHERE run_id = ? AND key = ?",
    "wf_inbox_put": "INSERT INTO {ks}.wf_inbox (run_id, key, seq, item, consumed) "
    "VALUES (?, ?, ?, ?, ?) USING TTL ?",
    "wf_inbox_consume": "UPDATE {ks}.wf_inbox USING TTL ? SET consumed = true "
    "WHERE run_id = ? AND key = ?",
    "wf_timer_put": "INSERT INTO {ks}.wf_timers (bucket, shard, due_at, run_id, gen, seq) "
    "VALUES (?, ?, ?, ?, ?, ?) USING TTL ?",
    "wf_timer_del": "DELETE FROM {ks}.wf_timers WHERE bucket = ? AND shard = ? AND due_at = ? "
    "AND run_id = ? AND gen = ? AND seq = ?",
    "wf_timers_get": "SELECT due_at, run_id, gen, seq FROM {ks}.wf_timers "
    "WHERE bucket = ? AND shard = ? AND due_at <= ? LIMIT ?",
    "wf_timer_buckets_put": "INSERT INTO {ks}.wf_timer_buckets (day, bucket) VALUES (?, ?) "
    "USING TTL ?",
    "wf_timer_buckets_get": "SELECT bucket FROM {ks}.wf_timer_buckets WHERE day = ?",
    "wf_timer_buckets_del": "DELETE FROM {ks}.wf_timer_buckets USING TIMESTAMP ? "
    "WHERE day = ? AND bucket = ?",
}
