"""One ``ScyllaStore``'s per-process state and the primitives every part of it uses.

The driver's ``Cluster`` is created lazily and again after a fork: Celery's
prefork pool forks after import and a driver's threads do not survive a fork.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Final

from state.records import OutboxMessage
from state.rules import Event, runs
from state.scylla.config import _MAX_TTL_S, ScyllaConfig
from state.scylla.driver import Row, StatementCounts, _Conn, _ok
from state.scylla.effects import HistoryItem
from state.scylla.rows import timeuuid

__all__ = ["MAX_CAS_ROUNDS", "Key", "Session"]

#: Rounds of read-then-compare-and-set before a contended write gives up.
MAX_CAS_ROUNDS: Final = 8
#: How long a row this thread read stays good as the next operation's read (``recall``).
RECENT_S: Final = 1.0
#: Rows a thread keeps for ``recall`` (a task needs two or three).
_RECENT_MAX: Final = 32

#: A node record key: (run id, node id, iteration).
Key = tuple[str, str, int]


def _row(rows: list[Row]) -> Row | None:
    # A row left with only its key (an expired run's marker) is no row.
    return rows[0] if rows and rows[0].get("status") is not None else None


class Session:
    """Configuration, TTLs, clock and connection of one store in one process."""

    def __init__(
        self,
        config: ScyllaConfig,
        *,
        retention_s: float | None = None,
        index_lookback_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Use the cluster in ``config``; nothing is connected until first use.

        ``clock`` also stamps the writes sent to the cluster (``USING TIMESTAMP``):
        keep it the wall clock (tests may shift it a little).
        """
        self.config = config
        self.retention_s = config.retention_s if retention_s is None else retention_s
        self.index_lookback_s = (
            config.index_lookback_s if index_lookback_s is None else index_lookback_s
        )
        #: TTL of a finished run's rows.
        self.ttl = min(max(1, math.ceil(self.retention_s)), _MAX_TTL_S)
        #: TTL of a live run's index hints and bucket entries: they are never read after it.
        self.hint_ttl = min(math.ceil(self.index_lookback_s) + 86400, _MAX_TTL_S)
        self.clock = clock
        self._pid = os.getpid()
        self._lock = threading.Lock()
        #: Guards the write clock and the per-process caches below.
        self.ts_lock = threading.Lock()
        self._conn: _Conn | None = None
        self._recent = threading.local()
        self._last_us = 0
        #: (status, bucket) pairs whose directory entry this process wrote.
        self.bucket_dirs: set[tuple[str, int]] = set()
        #: Outbox id -> (hour, created_at) locations seen by ``pending_outbox``.
        self.outbox_locs: dict[str, set[tuple[int, float]]] = {}
        self.outbox_origin: float | None = None

    # --- connections ----------------------------------------------------------------------
    @property
    def connection(self) -> _Conn | None:
        """This process's connection, if it was opened."""
        return self._conn

    def conn(self) -> _Conn:
        """This process's connection (opened on first use, and again in a forked child)."""
        if self._pid != os.getpid():
            # A forked child: the parent's Cluster is unusable here (its threads are gone) and
            # shutting it down could disturb the parent's sockets, so it is simply dropped.
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self.ts_lock = threading.Lock()
            self._conn = None
            self._recent = threading.local()
            self.bucket_dirs = set()
            self.outbox_locs = {}
        conn = self._conn
        if conn is None:
            with self._lock:
                if self._conn is None:
                    self._conn = _Conn(self.config)
                conn = self._conn
        return conn

    @contextlib.contextmanager
    def counting(self) -> Iterator[StatementCounts]:
        """Count what this process's connection sends inside the block (reads, LWTs, round trips).

        For tests and the benchmark: the counter is off otherwise. Blocks do not nest.
        """
        conn = self.conn()
        counts = StatementCounts()
        conn.counts = counts
        try:
            yield counts
        finally:
            conn.counts = None

    def close(self) -> None:
        """Shut this process's Cluster down."""
        conn = self._conn
        if conn is not None and self._pid == os.getpid():
            conn.shutdown()
        self._conn = None

    # --- rows this thread just read or wrote ------------------------------------------------
    def remember(self, key: tuple[Any, ...], value: Any) -> None:
        """Keep what this thread just read (or wrote) under ``key`` for the next operation.

        An engine task reads the run and the node, then claims the node, then completes
        it: the claim need not read them again, nor the completion the row the claim
        wrote. Such a row is only ever a compare-and-set's expectation or a liveness
        hint, exactly as a fresh non-SERIAL read is: if it is stale, the conditional
        write fails and the row is read again at SERIAL.
        """
        rows: dict[tuple[Any, ...], tuple[Any, float]] | None = getattr(self._recent, "rows", None)
        if rows is None:
            rows = self._recent.rows = {}
        elif len(rows) >= _RECENT_MAX:
            rows.clear()
        rows[key] = (value, time.monotonic())

    def recall(self, key: tuple[Any, ...], max_age_s: float = RECENT_S) -> Any:
        """What ``remember`` kept under ``key`` in this thread, once, if it is recent enough."""
        rows: dict[tuple[Any, ...], tuple[Any, float]] | None = getattr(self._recent, "rows", None)
        got = rows.pop(key, None) if rows else None
        if got is None or time.monotonic() - got[1] > max_age_s:
            return None
        return got[0]

    def forget(self, key: tuple[Any, ...]) -> None:
        """Drop what ``remember`` kept under ``key`` (this thread changed that row)."""
        rows = getattr(self._recent, "rows", None)
        if rows:
            rows.pop(key, None)

    # --- time -----------------------------------------------------------------------------
    def now(self) -> tuple[float, int]:
        """Now as (seconds, µs), strictly increasing in this process (µs are write timestamps)."""
        with self.ts_lock:
            us = int(self.clock() * 1_000_000)
            if us <= self._last_us:
                us = self._last_us + 1
            self._last_us = us
        return us / 1_000_000, us

    def item(self, event: Event) -> HistoryItem:
        """A rule's history event as a staged item, its time-based id taken now."""
        return HistoryItem(
            event_id=str(timeuuid(self.now()[1])),
            kind=event.kind,
            node_id=event.node_id,
            data=event.data,
        )

    def items(self, events: Iterable[Event]) -> tuple[HistoryItem, ...]:
        """Staged items of several events, in order."""
        return tuple(self.item(e) for e in events)

    @staticmethod
    def stamp(rows: Iterable[OutboxMessage], at: float) -> tuple[OutboxMessage, ...]:
        """Outbox rows stamped with the time of the write that stages them."""
        return tuple(replace(m, created_at=at) for m in rows)

    # --- rows -----------------------------------------------------------------------------
    def run_row(self, run_id: str, *, serial: bool = False) -> Row | None:
        """The run row (at SERIAL: after any Paxos round in flight)."""
        return _row(self.conn().execute("run_get", (run_id,), serial=serial))

    def node_row(
        self, run_id: str, node_id: str, iteration: int, *, serial: bool = False
    ) -> Row | None:
        """One node row."""
        return _row(self.conn().execute("node_get", (run_id, node_id, iteration), serial=serial))

    def run_and_node(
        self, run_id: str, node_id: str, iteration: int
    ) -> tuple[Row | None, Row | None]:
        """The run row and one node row, read concurrently."""
        runs_, nodes = _ok(
            self.conn().run_all(
                [("run_get", (run_id,)), ("node_get", (run_id, node_id, iteration))]
            )
        )
        return _row(runs_), _row(nodes)

    def node_rows(self, keys: Sequence[Key]) -> list[Row | None]:
        """Node rows by key, read concurrently (None where there is no record)."""
        return [_row(r) for r in _ok(self.conn().run_all([("node_get", k) for k in keys]))]

    def ttl_for(self, run: Row | None) -> int:
        """0 (no TTL) while the run is live; the retention TTL once it finished (or is gone)."""
        return 0 if run is not None and runs.live(run["status"]) else self.ttl
