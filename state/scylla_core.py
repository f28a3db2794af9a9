"""The Scylla store's per-process state and the primitives every part of the store uses."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Final

from state.constants import RUN_ACTIVE
from state.models import OutboxMessage
from state.scylla_config import _MAX_TTL_S, ScyllaConfig
from state.scylla_driver import Row, _Conn, _ok
from state.scylla_rows import timeuuid
from state.scylla_schema import HistoryItem

__all__ = ["MAX_CAS_ROUNDS", "ScyllaCore"]

#: Rounds of read-then-compare-and-set before a contended write gives up.
MAX_CAS_ROUNDS: Final = 8


class ScyllaCore:
    """Configuration, TTLs, clock and connection of one ``ScyllaStore`` (its base class)."""

    def __init__(
        self,
        config: ScyllaConfig,
        *,
        retention_s: float | None = None,
        index_lookback_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ):
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
        self._ttl = min(max(1, math.ceil(self.retention_s)), _MAX_TTL_S)
        #: TTL of a live run's index hints and bucket entries: they are never read after it.
        self._hint_ttl = min(math.ceil(self.index_lookback_s) + 86400, _MAX_TTL_S)
        self._clock = clock
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._ts_lock = threading.Lock()
        self._conn: _Conn | None = None
        self._last_us = 0
        self._bucket_dirs: set[tuple[str, int]] = set()
        self._outbox_locs: dict[str, set[tuple[int, float]]] = {}
        self._outbox_origin: float | None = None

    # --- connections ------------------------------------------------------------------------
    def _c(self) -> _Conn:
        if self._pid != os.getpid():
            # A forked child: the parent's Cluster is unusable here (its threads are gone) and
            # shutting it down could disturb the parent's sockets, so it is simply dropped.
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._ts_lock = threading.Lock()
            self._conn = None
            self._bucket_dirs = set()
            self._outbox_locs = {}
        conn = self._conn
        if conn is None:
            with self._lock:
                if self._conn is None:
                    self._conn = _Conn(self.config)
                conn = self._conn
        return conn

    def close(self) -> None:
        """Shut this process's Cluster down."""
        conn = self._conn
        if conn is not None and self._pid == os.getpid():
            conn.shutdown()
        self._conn = None

    # --- primitives -------------------------------------------------------------------------
    def _now(self) -> tuple[float, int]:
        """Now as (seconds, µs), strictly increasing in this process (µs are write timestamps)."""
        with self._ts_lock:
            us = int(self._clock() * 1_000_000)
            if us <= self._last_us:
                us = self._last_us + 1
            self._last_us = us
        return us / 1_000_000, us

    def _event(self, kind: str, node_id: str | None, data: Any) -> HistoryItem:
        return HistoryItem(
            event_id=str(timeuuid(self._now()[1])), kind=kind, node_id=node_id, data=data
        )

    def _run_row(self, run_id: str, *, serial: bool = False) -> Row | None:
        rows = self._c().execute("run_get", (run_id,), serial=serial)
        # A row left with only its key (an expired run's marker) is no run.
        return rows[0] if rows and rows[0].get("status") is not None else None

    def _node_row(
        self, run_id: str, node_id: str, iteration: int, *, serial: bool = False
    ) -> Row | None:
        rows = self._c().execute("node_get", (run_id, node_id, iteration), serial=serial)
        return rows[0] if rows and rows[0].get("status") is not None else None

    def _run_and_node(
        self, run_id: str, node_id: str, iteration: int
    ) -> tuple[Row | None, Row | None]:
        runs, nodes = _ok(
            self._c().run_all([("run_get", (run_id,)), ("node_get", (run_id, node_id, iteration))])
        )
        run = runs[0] if runs and runs[0].get("status") is not None else None
        node = nodes[0] if nodes and nodes[0].get("status") is not None else None
        return run, node

    def _ttl_for(self, run: Row | None) -> int:
        """0 (no TTL) while the run is live; the retention TTL once it finished (or is gone)."""
        return 0 if run is not None and run["status"] in RUN_ACTIVE else self._ttl

    def _stamp(self, rows: Iterable[OutboxMessage], at: float) -> tuple[OutboxMessage, ...]:
        return tuple(replace(m, created_at=at) for m in rows)
