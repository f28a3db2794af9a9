"""The SQLite state store: the embedded default, for one host (``sqlite:///path.db``).

- ``schema``: tables, indexes and ``migrate``;
- ``connection``: per-process, per-thread connections, WAL, ``BEGIN IMMEDIATE``;
- ``txn``: the transaction primitives the shared operations write through;
- ``rows``: rows to records;
- ``store``: ``SQLiteStore``, the reads and retention.
"""

from __future__ import annotations

from state.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
