"""Stores with atomic multi-row transactions (SQLite, memory): the operations, once.

``TransactionalStore`` implements every deciding ``StateStore`` operation as
read, rule (``state.rules``), write, inside one transaction of the backend; a
backend provides the transaction and its primitives (``Txn``) and its own
queries (``get_run``, ``list_runs``, ``due_timers``, ...). A third store with
transactions (PostgreSQL) implements the same primitives.
"""

from __future__ import annotations

from state.transactional.store import Begin, TransactionalStore
from state.transactional.txn import Key, NodeField, Txn

__all__ = ["Begin", "Key", "NodeField", "TransactionalStore", "Txn"]
